//! The TLS certificate-rotation scenario, swept over seeds (`SLUICE_SIM_SEEDS=K`, default 16)
//! or replayed one at a time (`SLUICE_SIM_SEED=N`). A test binary of its own: the TLS contexts
//! the scenario rotates are the process's (as in the binary), so no other TLS scenario may run
//! beside it in the same process.

use sluice_sim::sweep;

#[test]
fn tls_certificate_rotation() {
    sweep(
        "tls_certificate_rotation",
        "tls_rotation_scenarios",
        sluice_sim::tls::rotation::run,
    );
}
