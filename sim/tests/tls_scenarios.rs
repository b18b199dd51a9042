//! The TLS scenario, swept over seeds (`SLUICE_SIM_SEEDS=K`, default 16) or replayed one at a
//! time (`SLUICE_SIM_SEED=N`).

use sluice_sim::sweep;

#[test]
fn tls_handshake_failures() {
    sweep(
        "tls_handshake_failures",
        "tls_scenarios",
        sluice_sim::tls::run,
    );
}
