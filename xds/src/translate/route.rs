//! `RouteConfiguration` → the `virtual_hosts` of an `http` listener.
//!
//! Mapped: virtual hosts (`name`, `domains` — without their ports, see
//! [`domains_without_ports`] —, `routes`, `retry_policy` as the default of its
//! routes), route matches (`prefix`, `path`, `safe_regex`, `headers` with exact / prefix /
//! present / safe_regex / string_match without `ignore_case`, `case_sensitive: true`), actions
//! (`cluster`, `weighted_clusters`, `timeout`, `retry_policy` with the conditions the model
//! knows, `retriable_status_codes` and the `previous_hosts` predicate, `max_stream_duration`
//! when it asks for no limit, `prefix_rewrite`, `upgrade_configs` — each type's `enabled`
//! over the HCM's `upgrade_types` for that route; `connect_config` and `CONNECT` refused —,
//! `direct_response` with an inline body), a
//! virtual host's `include_request_attempt_count`, header edits at route, virtual host and
//! route configuration level — appending (`append_action: APPEND_IF_EXISTS_OR_ADD`, the
//! default, with `append` unset or true), overwriting (`OVERWRITE_IF_EXISTS_OR_ADD`, or
//! `append: false`), `ADD_IF_ABSENT` and `OVERWRITE_IF_EXISTS`, an empty value dropped unless
//! `keep_empty_value` (as Envoy does) — folded into each route by applying the levels in
//! Envoy's order (route, virtual host, route configuration, each its removals, then its
//! overwrites, then its appends; reversed by `most_specific_header_mutations_wins`), see
//! [`apply`].

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValueOption, data_source::Specifier, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, RetryPolicy, Route, RouteAction, RouteConfiguration, VirtualHost,
    header_matcher::HeaderMatchSpecifier, retry_policy::RetryHostPredicate,
    retry_policy::retry_host_predicate, route::Action, route_action::ClusterSpecifier,
    route_action::MaxStreamDuration, route_action::UpgradeConfig, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use serde_json::{Value, json};
use sluice_core::config::header_format::HeaderFormat;
use sluice_core::config::http::{AppendAction, RetryOn, StatusCodes, header_value_problem};

use super::{At, Notes, ResourceType, TranslateError, duration, object, reject_rest, take};

/// One header to add, with its `append_action` and where it was written (for errors).
#[derive(Clone, Debug, PartialEq)]
struct Add {
    name: String,
    value: String,
    action: AppendAction,
    /// The path of the entry (`..._headers_to_add[i]`).
    path: String,
}

impl Add {
    fn same_name(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// Whether it applies on a condition about the message (`ADD_IF_ABSENT`,
    /// `OVERWRITE_IF_EXISTS`).
    fn is_conditional(&self) -> bool {
        matches!(
            self.action,
            AppendAction::AddIfAbsent | AppendAction::OverwriteIfExists
        )
    }

    /// Whether its value has variables (`%VAR%`; `%%` is a literal): such an entry adds
    /// nothing when its value renders empty, so it only maybe adds its header.
    fn has_variables(&self) -> bool {
        self.value.replace("%%", "").contains('%')
    }
}

/// Header edits: as written at one level (route, virtual host or route configuration) — Envoy
/// applies a level's removals, then decides its conditional additions on the message as the
/// removals leave it, then applies its overwrites, then its appends —, or the result of
/// applying levels in turn ([`Edits::fold`]), in the form the config model takes: removals of
/// the message's fields, then additions where a name added by an entry that does not simply
/// append has no other entry.
#[derive(Clone, Default)]
struct Edits {
    request_add: Vec<Add>,
    request_remove: Vec<String>,
    response_add: Vec<Add>,
    response_remove: Vec<String>,
}

impl Edits {
    fn is_empty(&self) -> bool {
        self.request_add.is_empty()
            && self.request_remove.is_empty()
            && self.response_add.is_empty()
            && self.response_remove.is_empty()
    }

    /// The edits of `levels` applied in turn, each as Envoy applies one (see [`apply`]).
    fn fold<'e>(
        levels: impl IntoIterator<Item = &'e Edits>,
        at: &At<'_>,
    ) -> Result<Edits, TranslateError> {
        let mut out = Edits::default();
        for level in levels {
            apply(
                &mut out.request_add,
                &mut out.request_remove,
                &level.request_add,
                &level.request_remove,
                at,
            )?;
            apply(
                &mut out.response_add,
                &mut out.response_remove,
                &level.response_add,
                &level.response_remove,
                at,
            )?;
        }
        Ok(out)
    }
}

/// Applies one level's edits after those gathered so far (`removed` from the message, then
/// `added`), keeping the model's form:
/// - a removal drops what was added under its name, and removes the message's fields;
/// - the level's overwriting entries go before its appending ones (Envoy sets, then adds);
/// - a conditional entry whose name earlier levels added (so the message will have it) or
///   removed (so it will not) is decided here: `ADD_IF_ABSENT` is dropped or appends,
///   `OVERWRITE_IF_EXISTS` overwrites or is dropped; with a name no level touched before, it
///   stays conditional (the proxy asks the message), and then a later level may remove or
///   overwrite the name, or repeat the same conditional action (a second `ADD_IF_ABSENT` never
///   adds; a second `OVERWRITE_IF_EXISTS` replaces the first), but anything else would need
///   two entries of the name around a condition, which the model does not express: refused;
/// - an overwriting addition drops what was added under its name (its own entry removes the
///   message's fields);
/// - an appending addition after an overwriting one of its name turns that one into a removal
///   of the message's fields and an append, so the overwriting entry stays alone with its name.
///
/// Conditional entries share no name with another entry of their level ([`headers_to_add`]
/// refuses it), so deciding them one by one here is deciding them on the message as the
/// level's removals leave it.
fn apply(
    added: &mut Vec<Add>,
    removed: &mut Vec<String>,
    add: &[Add],
    remove: &[String],
    at: &At<'_>,
) -> Result<(), TranslateError> {
    fn remove_name(removed: &mut Vec<String>, name: &str) {
        let name = name.to_ascii_lowercase();
        if !removed.contains(&name) {
            removed.push(name);
        }
    }
    for n in remove {
        added.retain(|a| !a.same_name(n));
        remove_name(removed, n);
    }
    let overwrites_first = add
        .iter()
        .filter(|a| a.action.is_overwrite() || a.action == AppendAction::OverwriteIfExists)
        .chain(
            add.iter()
                .filter(|a| a.action.is_append() || a.action == AppendAction::AddIfAbsent),
        );
    for a in overwrites_first {
        let earlier = added.iter().position(|b| b.same_name(&a.name));
        // An entry with variables may add nothing (its value rendered empty), so what the
        // merging below assumes of it — present after it, replacing what came before —
        // would not hold: only appends of the name on both sides, or a plain overwrite
        // after it, keep their meaning.
        if let Some(i) = earlier {
            let b = &added[i];
            let both_append = a.action.is_append() && b.action.is_append();
            let plain_overwrite = a.action.is_overwrite() && !a.has_variables();
            if (b.has_variables() || a.has_variables()) && !both_append && !plain_overwrite {
                let (with_vars, other) = if a.has_variables() { (a, b) } else { (b, a) };
                return Err(At {
                    path: format!("{}.header.value", with_vars.path),
                    ..at.clone()
                }
                .error(format!(
                    "a value with variables ({:?}) for {:?} with {} at {} of another level is \
                     unsupported: it adds nothing when it renders empty, which one merged \
                     list cannot express",
                    with_vars.value,
                    a.name,
                    action_name(other.action),
                    other.path
                )));
            }
        }
        let earlier_conditional = earlier.filter(|&i| added[i].is_conditional());
        let mut a = a.clone();
        if let Some(i) = earlier_conditional {
            match (added[i].action, a.action) {
                // The first one leaves the name present either way.
                (AppendAction::AddIfAbsent, AppendAction::AddIfAbsent) => continue,
                (AppendAction::AddIfAbsent, AppendAction::OverwriteIfExists) => {
                    a.action = AppendAction::OverwriteIfExistsOrAdd;
                }
                (AppendAction::OverwriteIfExists, AppendAction::OverwriteIfExists)
                | (_, AppendAction::OverwriteIfExistsOrAdd) => {}
                _ => {
                    return Err(At {
                        path: format!("{}.append_action", a.path),
                        ..at.clone()
                    }
                    .error(format!(
                        "{} of {:?} after {} at {} (which depends on the message) is \
                         unsupported: the outcome would need two entries of the name around \
                         a condition",
                        action_name(a.action),
                        a.name,
                        action_name(added[i].action),
                        added[i].path
                    )));
                }
            }
            added.remove(i);
        } else if a.is_conditional() {
            let known = if earlier.is_some() {
                Some(true)
            } else if removed.iter().any(|n| n.eq_ignore_ascii_case(&a.name)) {
                Some(false)
            } else {
                None
            };
            match (a.action, known) {
                (_, None) => {}
                (AppendAction::AddIfAbsent, Some(true))
                | (AppendAction::OverwriteIfExists, Some(false)) => continue,
                (AppendAction::AddIfAbsent, Some(false)) => {
                    a.action = AppendAction::AppendIfExistsOrAdd;
                }
                _ => a.action = AppendAction::OverwriteIfExistsOrAdd,
            }
        }
        if a.action.is_append() {
            for b in added.iter_mut() {
                if b.action.is_overwrite() && b.same_name(&a.name) {
                    b.action = AppendAction::AppendIfExistsOrAdd;
                    remove_name(removed, &b.name);
                }
            }
        } else {
            added.retain(|b| !b.same_name(&a.name));
        }
        added.push(a);
    }
    Ok(())
}

/// Envoy's name of an action.
fn action_name(action: AppendAction) -> &'static str {
    match action {
        AppendAction::AppendIfExistsOrAdd => "APPEND_IF_EXISTS_OR_ADD",
        AppendAction::OverwriteIfExistsOrAdd => "OVERWRITE_IF_EXISTS_OR_ADD",
        AppendAction::AddIfAbsent => "ADD_IF_ABSENT",
        AppendAction::OverwriteIfExists => "OVERWRITE_IF_EXISTS",
    }
}

fn headers_to_add(list: Vec<HeaderValueOption>, at: &At<'_>) -> Result<Vec<Add>, TranslateError> {
    let mut out: Vec<Add> = Vec::new();
    for (i, mut h) in list.into_iter().enumerate() {
        let h_at = at.index(i);
        #[allow(deprecated)]
        let append = take(&mut h.append).map(|b| b.value);
        let action = take(&mut h.append_action);
        // Envoy: `append` (deprecated) decides when set, and then `append_action` must be
        // left at its default.
        if append.is_some() && action != HeaderAppendAction::AppendIfExistsOrAdd as i32 {
            return Err(h_at.field("append").error(
                "set together with append_action (Envoy refuses both; keep append_action)",
            ));
        }
        let action = match HeaderAppendAction::try_from(action) {
            Ok(HeaderAppendAction::AppendIfExistsOrAdd) if append == Some(false) => {
                AppendAction::OverwriteIfExistsOrAdd
            }
            Ok(HeaderAppendAction::AppendIfExistsOrAdd) => AppendAction::AppendIfExistsOrAdd,
            Ok(HeaderAppendAction::OverwriteIfExistsOrAdd) => AppendAction::OverwriteIfExistsOrAdd,
            Ok(HeaderAppendAction::AddIfAbsent) => AppendAction::AddIfAbsent,
            Ok(HeaderAppendAction::OverwriteIfExists) => AppendAction::OverwriteIfExists,
            Err(_) => {
                return Err(h_at
                    .field("append_action")
                    .error(format!("unknown value {action}")));
            }
        };
        let keep_empty = take(&mut h.keep_empty_value);
        let Some(mut header) = take(&mut h.header) else {
            return Err(h_at.field("header").error("missing"));
        };
        reject_rest(&h, &h_at)?;
        let hv_at = h_at.field("header");
        let key = take(&mut header.key);
        let mut value = take(&mut header.value);
        let raw = take(&mut header.raw_value);
        let raw_is_set = !raw.is_empty();
        if raw_is_set {
            value =
                String::from_utf8(raw).map_err(|_| hv_at.field("raw_value").error("not UTF-8"))?;
        }
        reject_rest(&header, &hv_at)?;
        // Envoy adds nothing for an empty value (neither appends nor overwrites) unless
        // `keep_empty_value` is set.
        if value.is_empty() && !keep_empty {
            continue;
        }
        // `%VAR%` and control characters: refused here by the field's path rather than by
        // the config's.
        let field = if raw_is_set { "raw_value" } else { "value" };
        if let Some(why) = header_value_problem(&value) {
            return Err(hv_at
                .field(field)
                .error(format!("value {value:?} of header {key:?} {why}")));
        }
        match HeaderFormat::parse(&value) {
            Err(e) => return Err(hv_at.field(field).error(format!("{value:?}: {e}"))),
            Ok(Some(_)) if keep_empty => {
                return Err(h_at.field("keep_empty_value").error(
                    "unsupported with a value that has variables (one that renders empty is \
                     not added)",
                ));
            }
            Ok(_) => {}
        }
        let add = Add {
            name: key,
            value,
            action,
            path: h_at.path.clone(),
        };
        // Envoy decides a level's conditional entries on the message before any of the
        // level's additions, and sets before it adds: with another entry of its name on the
        // level, the outcome would differ from applying the entries one by one.
        if let Some(other) = out
            .iter()
            .find(|o| o.same_name(&add.name) && (o.is_conditional() || add.is_conditional()))
        {
            return Err(h_at.field("append_action").error(format!(
                "{:?} is also added by {} on this level; a conditional action \
                 (ADD_IF_ABSENT, OVERWRITE_IF_EXISTS) must be the only entry of its name on its \
                 level",
                add.name, other.path
            )));
        }
        out.push(add);
    }
    Ok(out)
}

macro_rules! edits {
    ($msg:expr, $at:expr) => {{
        Edits {
            request_add: headers_to_add(
                take(&mut $msg.request_headers_to_add),
                &$at.field("request_headers_to_add"),
            )?,
            request_remove: take(&mut $msg.request_headers_to_remove),
            response_add: headers_to_add(
                take(&mut $msg.response_headers_to_add),
                &$at.field("response_headers_to_add"),
            )?,
            response_remove: take(&mut $msg.response_headers_to_remove),
        }
    }};
}

/// Translates a route configuration into a list of virtual hosts.
pub fn translate_route_configuration(
    rc: &RouteConfiguration,
    notes: &mut Notes,
) -> Result<Vec<Value>, TranslateError> {
    let at = At::root(ResourceType::Route, &rc.name);
    let mut rest = rc.clone();
    take(&mut rest.name);
    if take(&mut rest.metadata).is_some() {
        at.note(notes, "metadata");
    }
    // The config is always validated: a route to an unknown cluster is refused either way.
    take(&mut rest.validate_clusters);
    // The Host header's port is never matched.
    take(&mut rest.ignore_port_in_host_matching);
    // Envoy applies the route's edits, then the virtual host's, then the route
    // configuration's; this flag reverses that.
    let most_specific_wins = take(&mut rest.most_specific_header_mutations_wins);
    let config_edits = edits!(rest, at);
    let vhosts = take(&mut rest.virtual_hosts);
    reject_rest(&rest, &at)?;
    vhosts
        .into_iter()
        .enumerate()
        .map(|(i, vh)| {
            virtual_host(
                vh,
                &at.field("virtual_hosts").index(i),
                &config_edits,
                most_specific_wins,
                notes,
            )
        })
        .collect()
}

fn virtual_host(
    mut vh: VirtualHost,
    at: &At<'_>,
    config_edits: &Edits,
    most_specific_wins: bool,
    notes: &mut Notes,
) -> Result<Value, TranslateError> {
    for (set, field) in [
        (take(&mut vh.metadata).is_some(), "metadata"),
        (
            !take(&mut vh.virtual_clusters).is_empty(),
            "virtual_clusters",
        ),
    ] {
        if set {
            at.note(notes, field);
        }
    }
    let name = take(&mut vh.name);
    super::cluster::config_name(&name, &at.field("name"))?;
    let domains = domains_without_ports(take(&mut vh.domains));
    let vh_edits = edits!(vh, at);
    let outer = Outer {
        config: config_edits,
        vhost: &vh_edits,
        most_specific_wins,
    };
    let retry = take(&mut vh.retry_policy)
        .map(|r| retry_policy(r, &at.field("retry_policy")))
        .transpose()?
        .flatten();
    let attempt_count = take(&mut vh.include_request_attempt_count);
    let routes = take(&mut vh.routes);
    reject_rest(&vh, at)?;
    let routes = routes
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            route(
                r,
                &at.field("routes").index(i),
                &outer,
                retry.as_ref(),
                notes,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut v = json!({ "name": name, "domains": domains, "routes": routes });
    if attempt_count && let Value::Object(m) = &mut v {
        m.insert("include_request_attempt_count".into(), json!(true));
    }
    Ok(v)
}

/// A virtual host's domains with any `:port` taken off and duplicates dropped (first one kept):
/// Sluice matches the Host header without its port, so Istio's pairs (`reviews` and
/// `reviews:9080`, one route configuration per port) become one domain. Two virtual hosts of one
/// route configuration that differ only by port end up with the same domain, which validation
/// then refuses by name.
fn domains_without_ports(domains: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(domains.len());
    for d in domains {
        let host = match d.rsplit_once(':') {
            // `[v6]:port` or `name:port`; a bare IPv6 address without brackets is left as is
            // (validation names it).
            Some((host, port))
                if !port.is_empty()
                    && port.bytes().all(|b| b.is_ascii_digit())
                    && (host.ends_with(']') || !host.contains(':')) =>
            {
                host.to_owned()
            }
            _ => d,
        };
        if !out.contains(&host) {
            out.push(host);
        }
    }
    out
}

/// The header edits of the levels around a route.
struct Outer<'e> {
    config: &'e Edits,
    vhost: &'e Edits,
    /// `most_specific_header_mutations_wins`: the route configuration's edits first, the
    /// route's last (by default the other way round).
    most_specific_wins: bool,
}

fn route(
    mut r: Route,
    at: &At<'_>,
    outer: &Outer<'_>,
    vhost_retry: Option<&Value>,
    notes: &mut Notes,
) -> Result<Value, TranslateError> {
    for (set, field) in [
        (!take(&mut r.name).is_empty(), "name"),
        (take(&mut r.metadata).is_some(), "metadata"),
        (take(&mut r.decorator).is_some(), "decorator"),
        (take(&mut r.tracing).is_some(), "tracing"),
        (!take(&mut r.stat_prefix).is_empty(), "stat_prefix"),
    ] {
        if set {
            at.note(notes, field);
        }
    }
    let route_edits = edits!(r, at);
    let edits = if outer.most_specific_wins {
        Edits::fold([outer.config, outer.vhost, &route_edits], at)?
    } else {
        Edits::fold([&route_edits, outer.vhost, outer.config], at)?
    };
    let matcher = match take(&mut r.r#match) {
        Some(m) => route_match(m, &at.field("match"))?,
        None => return Err(at.field("match").error("missing")),
    };
    let action = take(&mut r.action);
    reject_rest(&r, at)?;
    let (key, action) = match action {
        Some(Action::Route(a)) => (
            "route",
            route_action(a, &at.field("route"), &edits, vhost_retry)?,
        ),
        Some(Action::DirectResponse(mut d)) => {
            let d_at = at.field("direct_response");
            if !edits.is_empty() {
                return Err(d_at.error(
                    "header edits on a direct response are unsupported (route, virtual host or \
                     route configuration level)",
                ));
            }
            let status = take(&mut d.status);
            let body = match take(&mut d.body).and_then(|b| b.specifier) {
                None => None,
                Some(Specifier::InlineString(s)) => Some(s),
                Some(Specifier::InlineBytes(b)) => Some(
                    String::from_utf8(b)
                        .map_err(|_| d_at.field("body.inline_bytes").error("not UTF-8"))?,
                ),
                Some(_) => {
                    return Err(d_at.field("body").error("only an inline body is supported"));
                }
            };
            reject_rest(&d, &d_at)?;
            (
                "direct_response",
                object([
                    ("status", Some(json!(status))),
                    ("body", body.map(Value::String)),
                ]),
            )
        }
        Some(Action::Redirect(_)) => return Err(at.field("redirect").unsupported()),
        Some(Action::FilterAction(_)) => return Err(at.field("filter_action").unsupported()),
        Some(Action::NonForwardingAction(_)) => {
            return Err(at.field("non_forwarding_action").unsupported());
        }
        None => return Err(at.error("no action")),
    };
    let mut v = json!({ "match": matcher });
    if let Value::Object(m) = &mut v {
        m.insert(key.to_owned(), action);
    }
    Ok(v)
}

fn regex(mut r: RegexMatcher, at: &At<'_>) -> Result<Value, TranslateError> {
    let re = take(&mut r.regex);
    // The engine (Google RE2) is the only one; the `regex` crate has the same linear-time
    // guarantees.
    take(&mut r.engine_type);
    reject_rest(&r, at)?;
    Ok(json!(re))
}

fn route_match(
    mut m: envoy_types::pb::envoy::config::route::v3::RouteMatch,
    at: &At<'_>,
) -> Result<Value, TranslateError> {
    match take(&mut m.case_sensitive) {
        None => {}
        Some(b) if b.value => {}
        Some(_) => {
            return Err(at
                .field("case_sensitive")
                .error("only case-sensitive matching is supported"));
        }
    }
    let path = match take(&mut m.path_specifier) {
        Some(PathSpecifier::Prefix(p)) => ("prefix", json!(p)),
        Some(PathSpecifier::Path(p)) => ("path", json!(p)),
        Some(PathSpecifier::SafeRegex(r)) => ("safe_regex", regex(r, &at.field("safe_regex"))?),
        Some(PathSpecifier::ConnectMatcher(_)) => {
            return Err(at.field("connect_matcher").unsupported());
        }
        Some(PathSpecifier::PathSeparatedPrefix(_)) => {
            return Err(at.field("path_separated_prefix").unsupported());
        }
        Some(PathSpecifier::PathMatchPolicy(_)) => {
            return Err(at.field("path_match_policy").unsupported());
        }
        None => return Err(at.error("no path rule (prefix, path or safe_regex)")),
    };
    let headers = take(&mut m.headers)
        .into_iter()
        .enumerate()
        .map(|(i, h)| header_matcher(h, &at.field("headers").index(i)))
        .collect::<Result<Vec<_>, _>>()?;
    reject_rest(&m, at)?;
    let mut v = json!({ path.0: path.1 });
    if !headers.is_empty()
        && let Value::Object(o) = &mut v
    {
        o.insert("headers".to_owned(), Value::Array(headers));
    }
    Ok(v)
}

fn header_matcher(mut h: HeaderMatcher, at: &At<'_>) -> Result<Value, TranslateError> {
    let name = take(&mut h.name);
    if take(&mut h.invert_match) {
        return Err(at.field("invert_match").unsupported());
    }
    #[allow(deprecated)]
    let (key, value) = match take(&mut h.header_match_specifier) {
        // No rule: the header must be present.
        None => ("present", json!(true)),
        Some(HeaderMatchSpecifier::ExactMatch(s)) => ("exact", json!(s)),
        Some(HeaderMatchSpecifier::PrefixMatch(s)) => ("prefix", json!(s)),
        Some(HeaderMatchSpecifier::PresentMatch(b)) => ("present", json!(b)),
        Some(HeaderMatchSpecifier::SafeRegexMatch(r)) => {
            ("safe_regex", regex(r, &at.field("safe_regex_match"))?)
        }
        Some(HeaderMatchSpecifier::StringMatch(mut s)) => {
            let s_at = at.field("string_match");
            if take(&mut s.ignore_case) {
                return Err(s_at.field("ignore_case").unsupported());
            }
            let rule = match take(&mut s.match_pattern) {
                Some(MatchPattern::Exact(e)) => ("exact", json!(e)),
                Some(MatchPattern::Prefix(p)) => ("prefix", json!(p)),
                Some(MatchPattern::SafeRegex(r)) => {
                    ("safe_regex", regex(r, &s_at.field("safe_regex"))?)
                }
                Some(_) => {
                    return Err(s_at.error("only exact, prefix and safe_regex are supported"));
                }
                None => return Err(s_at.error("no pattern")),
            };
            reject_rest(&s, &s_at)?;
            rule
        }
        Some(_) => {
            return Err(at.error(
                "only exact, prefix, present, safe_regex and string_match rules are supported",
            ));
        }
    };
    reject_rest(&h, at)?;
    Ok(json!({ "name": name, key: value }))
}

fn route_action(
    mut a: RouteAction,
    at: &At<'_>,
    edits: &Edits,
    vhost_retry: Option<&Value>,
) -> Result<Value, TranslateError> {
    // Every referenced cluster exists (validation), so this code is never used.
    take(&mut a.cluster_not_found_response_code);
    let (key, target) = match take(&mut a.cluster_specifier) {
        Some(ClusterSpecifier::Cluster(c)) => ("cluster", json!(c)),
        Some(ClusterSpecifier::WeightedClusters(mut w)) => {
            let w_at = at.field("weighted_clusters");
            #[allow(deprecated)]
            take(&mut w.total_weight);
            let clusters = take(&mut w.clusters);
            reject_rest(&w, &w_at)?;
            let mut list = Vec::new();
            for (i, mut c) in clusters.into_iter().enumerate() {
                let c_at = w_at.field("clusters").index(i);
                let name = take(&mut c.name);
                let weight = take(&mut c.weight).map_or(0, |w| w.value);
                reject_rest(&c, &c_at)?;
                list.push(json!({ "cluster": name, "weight": weight }));
            }
            ("weighted_clusters", Value::Array(list))
        }
        Some(ClusterSpecifier::ClusterHeader(_)) => {
            return Err(at.field("cluster_header").unsupported());
        }
        Some(_) => return Err(at.field("cluster_specifier_plugin").unsupported()),
        None => return Err(at.error("no cluster")),
    };
    let timeout = take(&mut a.timeout)
        .map(|d| duration(&d, &at.field("timeout")))
        .transpose()?;
    let prefix_rewrite = match take(&mut a.prefix_rewrite) {
        s if s.is_empty() => None,
        s => Some(json!(s)),
    };
    let retry = match take(&mut a.retry_policy) {
        Some(r) => retry_policy(r, &at.field("retry_policy"))?,
        None => vhost_retry.cloned(),
    };
    if let Some(mut m) = take(&mut a.max_stream_duration) {
        max_stream_duration(&mut m, &at.field("max_stream_duration"))?;
    }
    let upgrades = route_upgrades(take(&mut a.upgrade_configs), at)?;
    reject_rest(&a, at)?;
    let list = |l: &[Add]| -> Option<Value> {
        (!l.is_empty()).then(|| {
            Value::Array(
                l.iter()
                    .map(|a| {
                        let mut v = json!({ "name": a.name, "value": a.value });
                        if !a.action.is_overwrite()
                            && let Value::Object(m) = &mut v
                        {
                            m.insert("append_action".into(), json!(a.action));
                        }
                        v
                    })
                    .collect(),
            )
        })
    };
    let names = |l: &[String]| (!l.is_empty()).then(|| json!(l));
    let mut v = object([
        ("timeout", timeout),
        ("prefix_rewrite", prefix_rewrite),
        ("retry_policy", retry),
        ("request_headers_to_add", list(&edits.request_add)),
        ("request_headers_to_remove", names(&edits.request_remove)),
        ("response_headers_to_add", list(&edits.response_add)),
        ("response_headers_to_remove", names(&edits.response_remove)),
        ("upgrade_configs", upgrades),
    ]);
    if let Value::Object(m) = &mut v {
        m.insert(key.to_owned(), target);
    }
    Ok(v)
}

/// A route's `upgrade_configs` → its `upgrade_configs` (`upgrade_type` lowercase, `enabled`
/// true when unset), overriding the HCM's list for the types they name; `None` without any.
/// `connect_config`, `CONNECT`, a type that is not a token and a type listed twice (Envoy:
/// "Duplicate upgrade") are refused by path.
fn route_upgrades(
    configs: Vec<UpgradeConfig>,
    at: &At<'_>,
) -> Result<Option<Value>, TranslateError> {
    let u_at = at.field("upgrade_configs");
    let mut list: Vec<(String, bool)> = Vec::new();
    for (i, mut u) in configs.into_iter().enumerate() {
        let i_at = u_at.index(i);
        let name = take(&mut u.upgrade_type).to_ascii_lowercase();
        let enabled = take(&mut u.enabled).is_none_or(|b| b.value);
        if u.connect_config.is_some() {
            return Err(i_at.field("connect_config").unsupported());
        }
        reject_rest(&u, &i_at)?;
        if name == "connect" {
            return Err(i_at.field("upgrade_type").error("CONNECT is unsupported"));
        }
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return Err(i_at
                .field("upgrade_type")
                .error(format!("{name:?} is not an upgrade token")));
        }
        if list.iter().any(|(n, _)| *n == name) {
            return Err(i_at
                .field("upgrade_type")
                .error(format!("{name:?} is listed twice")));
        }
        list.push((name, enabled));
    }
    Ok((!list.is_empty()).then(|| {
        Value::Array(
            list.into_iter()
                .map(|(t, e)| json!({ "upgrade_type": t, "enabled": e }))
                .collect(),
        )
    }))
}

/// A retry policy, or `None` when it retries nothing.
fn retry_policy(mut r: RetryPolicy, at: &At<'_>) -> Result<Option<Value>, TranslateError> {
    let retry_on = take(&mut r.retry_on);
    let mut conditions = Vec::new();
    for c in retry_on.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        if !RetryOn::NAMES.contains(&c) {
            return Err(at.field("retry_on").error(format!(
                "{c:?} is unsupported (supported: {})",
                RetryOn::NAMES.join(", ")
            )));
        }
        conditions.push(json!(c));
    }
    // Envoy takes a code listed twice; the config model's list has each code once.
    let mut set = StatusCodes::default();
    let mut codes = Vec::new();
    for c in take(&mut r.retriable_status_codes) {
        let code = u16::try_from(c)
            .ok()
            .filter(|c| (StatusCodes::MIN..=StatusCodes::MAX).contains(c));
        let Some(code) = code else {
            return Err(at
                .field("retriable_status_codes")
                .error(format!("{c} is not an HTTP status code (100–599)")));
        };
        if !set.contains(code) {
            set.insert(code);
            codes.push(code);
        }
    }
    // Envoy ignores codes without the condition, and the condition without codes retries
    // nothing: the model, stricter for a hand-written file, gets neither in those cases.
    let condition = json!("retriable-status-codes");
    if codes.is_empty() {
        conditions.retain(|c| *c != condition);
    } else if !conditions.contains(&condition) {
        codes.clear();
    }
    let codes = (!codes.is_empty()).then(|| json!(codes));
    let num = take(&mut r.num_retries).map(|n| json!(n.value));
    let per_try = take(&mut r.per_try_timeout)
        .map(|d| duration(&d, &at.field("per_try_timeout")))
        .transpose()?;
    // Istio's default policy asks for a host not tried yet, re-picking up to 5 times: Sluice's
    // retries always go to a host not tried yet when one is available, so `previous_hosts` is
    // what they do already, and the re-pick bound has nothing to bound.
    for (i, p) in take(&mut r.retry_host_predicate).into_iter().enumerate() {
        if !is_previous_hosts(&p) {
            return Err(at.field("retry_host_predicate").index(i).error(format!(
                "{:?} is unsupported (supported: {PREVIOUS_HOSTS}, which is what Sluice's \
                 retries do)",
                p.name
            )));
        }
    }
    if take(&mut r.host_selection_retry_max_attempts) < 0 {
        return Err(at
            .field("host_selection_retry_max_attempts")
            .error("must not be negative"));
    }
    reject_rest(&r, at)?;
    // No condition left (an empty `retry_on`): a policy that retries nothing, as in Envoy.
    if conditions.is_empty() {
        return Ok(None);
    }
    Ok(Some(object([
        ("retry_on", Some(Value::Array(conditions))),
        ("retriable_status_codes", codes),
        ("num_retries", num),
        ("per_try_timeout", per_try),
    ])))
}

/// Envoy's `previous_hosts` retry host predicate, by name.
const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";
/// … and by the type of its (empty) config.
const PREVIOUS_HOSTS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

fn is_previous_hosts(p: &RetryHostPredicate) -> bool {
    match &p.config_type {
        Some(retry_host_predicate::ConfigType::TypedConfig(any)) => {
            any.type_url == PREVIOUS_HOSTS_TYPE
        }
        None => p.name == PREVIOUS_HOSTS,
    }
}

/// A route's `max_stream_duration`: accepted when it asks for what Sluice does — no stream
/// duration limit (`0` or unset), and a `grpc-timeout` header honoured without a cap
/// (`grpc_timeout_header_max: 0`, Istio's setting; Sluice always honours it) — else refused.
fn max_stream_duration(m: &mut MaxStreamDuration, at: &At<'_>) -> Result<(), TranslateError> {
    let zero = |d: Option<PbDuration>| d.is_none_or(|d| d.seconds == 0 && d.nanos == 0);
    if !zero(take(&mut m.max_stream_duration)) {
        return Err(at
            .field("max_stream_duration")
            .error("unsupported (only 0: no limit)"));
    }
    if !zero(take(&mut m.grpc_timeout_header_max)) {
        return Err(at.field("grpc_timeout_header_max").error(
            "unsupported (only 0: Sluice honours a gRPC request's grpc-timeout without a cap)",
        ));
    }
    reject_rest(m, at)
}
