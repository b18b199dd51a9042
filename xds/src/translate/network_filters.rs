//! The network filters a filter chain puts before its terminal one (the HTTP connection
//! manager or the TCP proxy), as istiod writes them on its inbound chains.
//!
//! Ignored and counted in [`Notes`] — they only add telemetry or exchange peer metadata for
//! it:
//! - Istio's TCP metadata exchange (`istio.metadata_exchange`: a `TypedStruct` of
//!   `envoy.tcp.metadataexchange.config.MetadataExchange`, or that type itself). Unlike the
//!   others this one *would* change the bytes: when TLS negotiates ALPN
//!   `istio-peer-exchange`, each side writes a metadata header into the stream first (a magic
//!   number, a length, a protobuf `Any`) and reads the other's. Sluice speaks no metadata
//!   exchange, so no chain ever negotiates that ALPN (with this filter or without): the
//!   listener translation drops `istio-peer-exchange` from every chain's TLS ALPN (offering
//!   `istio` in its place, which Istio's clients offer beside it); the client's filter then
//!   does no exchange, as with any peer that does not negotiate it;
//! - Istio's stats filter (`istio.stats`: `stats.PluginConfig`, itself or in a
//!   `TypedStruct`, whatever the filter's name);
//! - `envoy.filters.network.wasm` running Istio's stats plugin (`root_id` `stats_inbound` /
//!   `stats_outbound` *and* Istio's stats code: the `envoy.wasm.stats` null-VM code or a
//!   `…stats-filter….wasm` file — a root id alone says nothing of what the code does).
//!
//! RBAC (`envoy.filters.network.rbac`) is security, never dropped silently: accepted (and
//! noted) only when it can deny nothing — no `rules` (only `shadow_rules`, which Envoy never
//! enforces), `action: LOG`, `action: DENY` without policies, or `action: ALLOW` with a
//! policy that matches every connection (an `any: true` permission and an `any: true`
//! principal, no condition). Any other RBAC (a policy that denies some connection, or a
//! `matcher`) is refused by path, as is every other filter.

use envoy_types::pb::envoy::config::core::v3::{async_data_source, data_source};
use envoy_types::pb::envoy::config::rbac::v3::{Policy, permission, principal, rbac::Action};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac;
use envoy_types::pb::envoy::extensions::filters::network::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::wasm::v3::plugin_config;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

use super::{At, Notes, TranslateError, reject_rest, take, unpack};

/// `TypedStruct` (`udpa.type.v1` and `xds.type.v3`): an untyped config naming its real type.
const TYPED_STRUCTS: [&str; 2] = [
    "type.googleapis.com/udpa.type.v1.TypedStruct",
    "type.googleapis.com/xds.type.v3.TypedStruct",
];
const METADATA_EXCHANGE: &str =
    "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange";
pub(super) const ISTIO_STATS: &str = "type.googleapis.com/stats.PluginConfig";

/// The type a filter's config really is: its own type URL, or, for a `TypedStruct`, the
/// `type_url` it carries. (A `TypedStruct` starts with `string type_url = 1`, as `Any` does,
/// so it decodes as an `Any` whose `value` is the struct's encoded fields.)
pub(super) fn real_type(any: &Any) -> String {
    if TYPED_STRUCTS.contains(&any.type_url.as_str()) {
        Any::decode(any.value.as_slice()).map_or_else(|_| String::new(), |inner| inner.type_url)
    } else {
        any.type_url.clone()
    }
}

/// Checks a filter placed before the terminal one (`named`: its path with its name): `Ok`
/// when it is ignored (noted) or an RBAC that denies nothing; `Err` otherwise.
pub(super) fn before_terminal(
    any: &Any,
    named: &At<'_>,
    notes: &mut Notes,
) -> Result<(), TranslateError> {
    let real = real_type(any);
    if real == METADATA_EXCHANGE || real == ISTIO_STATS {
        named.note(notes, "");
        return Ok(());
    }
    if any.type_url == Wasm::type_url() {
        let w: Wasm = unpack(any, named)?;
        if is_istio_stats_wasm(&w) {
            named.note(notes, "");
            return Ok(());
        }
        return Err(
            named.error("unsupported (a Wasm network filter other than Istio's stats plugin)")
        );
    }
    if any.type_url == Rbac::type_url() {
        let r: Rbac = unpack(any, named)?;
        return rbac(r, &named.field("typed_config"), notes);
    }
    Err(named.error(
        "unsupported before the terminal filter (only Istio's metadata exchange and stats, \
         and an RBAC filter that denies nothing)",
    ))
}

fn is_istio_stats_wasm(w: &Wasm) -> bool {
    let Some(config) = &w.config else {
        return false;
    };
    if !matches!(config.root_id.as_str(), "stats_inbound" | "stats_outbound") {
        return false;
    }
    let Some(plugin_config::Vm::VmConfig(vm)) = &config.vm else {
        return false;
    };
    let code = vm.code.as_ref().and_then(|c| c.specifier.as_ref());
    let Some(async_data_source::Specifier::Local(d)) = code else {
        return false;
    };
    match &d.specifier {
        Some(data_source::Specifier::InlineString(s)) => s == "envoy.wasm.stats",
        Some(data_source::Specifier::Filename(f)) => {
            let file = f.rsplit('/').next().unwrap_or(f);
            file.contains("stats-filter") && file.ends_with(".wasm")
        }
        _ => false,
    }
}

/// A network RBAC filter: accepted only when it denies no connection (see the module doc).
fn rbac(mut r: Rbac, at: &At<'_>, notes: &mut Notes) -> Result<(), TranslateError> {
    for (set, field) in [
        (!take(&mut r.stat_prefix).is_empty(), "stat_prefix"),
        (
            !take(&mut r.shadow_rules_stat_prefix).is_empty(),
            "shadow_rules_stat_prefix",
        ),
        // Never enforced: only counted by Envoy.
        (take(&mut r.shadow_rules).is_some(), "shadow_rules"),
        (take(&mut r.shadow_matcher).is_some(), "shadow_matcher"),
    ] {
        if set {
            at.note(notes, field);
        }
    }
    // When nothing is denied, when the check runs and how long a denial waits matter not.
    take(&mut r.enforcement_type);
    take(&mut r.delay_deny);
    if r.matcher.is_some() {
        return Err(at.field("matcher").error(
            "unsupported (an RBAC matcher may deny connections; only rules that deny nothing \
             are accepted)",
        ));
    }
    let rules = take(&mut r.rules);
    reject_rest(&r, at)?;
    let Some(mut rules) = rules else {
        // No rules: Envoy enforces nothing.
        return Ok(());
    };
    let r_at = at.field("rules");
    if take(&mut rules.audit_logging_options).is_some() {
        r_at.note(notes, "audit_logging_options");
    }
    match Action::try_from(rules.action) {
        Ok(Action::Log) => {
            r_at.note(notes, "");
            Ok(())
        }
        Ok(Action::Deny) if rules.policies.is_empty() => Ok(()),
        Ok(Action::Deny) => Err(r_at.field("policies").error(
            "unsupported: a DENY policy would deny some connections, which Sluice cannot \
             enforce (only RBAC that denies nothing is accepted)",
        )),
        Ok(Action::Allow) => {
            let mut names: Vec<&String> = rules.policies.keys().collect();
            names.sort();
            if names.iter().any(|n| allows_all(&rules.policies[*n])) {
                Ok(())
            } else {
                Err(r_at.field("policies").error(
                    "unsupported: the ALLOW policies would deny the connections none of them \
                     matches, which Sluice cannot enforce (only RBAC that denies nothing is \
                     accepted: a policy with an `any: true` permission and principal)",
                ))
            }
        }
        _ => Err(r_at
            .field("action")
            .error(format!("unknown action {}", rules.action))),
    }
}

/// Whether a policy matches every connection: an `any: true` permission, an `any: true`
/// principal, and no condition.
fn allows_all(p: &Policy) -> bool {
    let any_permission = p
        .permissions
        .iter()
        .any(|x| matches!(x.rule, Some(permission::Rule::Any(true))));
    let any_principal = p
        .principals
        .iter()
        .any(|x| matches!(x.identifier, Some(principal::Identifier::Any(true))));
    any_permission && any_principal && p.condition.is_none() && p.checked_condition.is_none()
}
