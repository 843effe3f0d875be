//! The HTTP front: request routing, stats, fault injection, authorization and the REST verbs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::control;
use crate::discovery;
use crate::error::ApiError;
use crate::lifecycle::{
    self, DeletePreconditions, Deleted, FieldValidation, Location, Part, PatchType, WriteOptions, Written,
};
use crate::meta;
use crate::negotiate::{self, Representation};
use crate::openapi;
use crate::protobuf::{self, ProtobufError};
use crate::rbac::{self, User};
use crate::registry::ResourceType;
use crate::routes::{self, Resolved, Route};
use crate::selector::{FieldSelector, LabelSelector};
use crate::server::Server;
use crate::table;
use crate::watch::{self, WatchRequest};

/// Largest request body accepted.
const MAX_BODY: usize = 32 << 20;

pub fn router(server: Server) -> Router {
    Router::new().fallback(handle).with_state(server)
}

/// Query parameters in request order.
struct Params(Vec<(String, String)>);

impl Params {
    fn from_parts(parts: &Parts) -> Result<Self, ApiError> {
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|q| Params(q.0))
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

fn json_response(status: StatusCode, body: &Value, warnings: &[String]) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    for warning in warnings {
        let text = format!("299 - \"{}\"", warning.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

async fn handle(State(server): State<Server>, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let route = routes::parse(parts.uri.path());
    let response = match route {
        Route::Control(path) => control::handle(&server, &parts.method, &path, body).await,
        route => match dispatch(&server, &parts, route, body).await {
            Ok(response) => response,
            Err(e) => e.into_response(),
        },
    };
    tracing::debug!(
        method = %parts.method,
        uri = %parts.uri,
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

/// Counts the request and applies injected failures.
fn admit_request(server: &Server, path: &str, verb: &str, resource: &str) -> Result<(), ApiError> {
    server.stats().record(verb, resource);
    let failure = server.faults().take_failure(path, verb);
    if let Some(err) = failure {
        server.stats().injected_faults += 1;
        return Err(err);
    }
    Ok(())
}

async fn dispatch(server: &Server, parts: &Parts, route: Route, body: Body) -> Result<Response, ApiError> {
    let path = parts.uri.path();
    let resource_route = match route {
        Route::Resource { group, version, segments } => (group, version, segments),
        other => {
            if parts.method != Method::GET && parts.method != Method::HEAD {
                return Err(ApiError::method_not_allowed(parts.method.as_str(), path));
            }
            let label = match other {
                Route::OpenApiV2 | Route::OpenApiV3Root | Route::OpenApiV3 { .. } => "openapi",
                _ => "discovery",
            };
            admit_request(server, path, "get", label)?;
            return non_resource(server, parts, other);
        }
    };
    let (group, version, segments) = resource_route;
    let params = Params::from_parts(parts)?;
    let resolved = {
        let store = server.store();
        routes::resolve(&store.registry, &group, &version, &segments)?
    };
    let verb = verb_of(&parts.method, &resolved, &params)?;
    let stats_resource = stats_label(&resolved);
    admit_request(server, path, verb, &stats_resource)?;
    if server.config().enforce_rbac {
        let user = User::from_headers(&parts.headers);
        let attrs = rbac::Attributes {
            verb,
            group: &resolved.rt.group,
            resource: &resolved.rt.plural,
            subresource: resolved.subresource.as_deref(),
            namespace: resolved.namespace.as_deref(),
            name: resolved.name.as_deref(),
        };
        rbac::authorize(&server.store(), &user, &attrs)?;
    }
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?;
    let hold = server.faults().take_hold(path, verb, &body);
    if let Some(hold) = hold {
        server.stats().injected_faults += 1;
        tokio::time::sleep(hold).await;
    }
    let request =
        ResourceRequest { server, headers: &parts.headers, params: &params, resolved: &resolved, body: &body };
    match verb {
        "get" => request.get(),
        "list" => request.list(),
        "watch" => request.watch(),
        "create" => request.create(),
        "update" => request.update(),
        "patch" => request.patch(),
        "delete" => request.delete(),
        "deletecollection" => request.delete_collection(),
        other => Err(ApiError::method_not_allowed(other, &resolved.rt.plural)),
    }
}

fn verb_of(method: &Method, resolved: &Resolved, params: &Params) -> Result<&'static str, ApiError> {
    let named = resolved.name.is_some();
    Ok(match (method.as_str(), named) {
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) if params.flag("watch") => "watch",
        ("GET" | "HEAD", false) => "list",
        ("POST", false) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (m, _) => return Err(ApiError::method_not_allowed(m, &resolved.rt.plural)),
    })
}

fn stats_label(resolved: &Resolved) -> String {
    let base = resolved.rt.stats_label();
    match &resolved.subresource {
        Some(sub) => format!("{base}/{sub}"),
        None => base,
    }
}

fn non_resource(server: &Server, parts: &Parts, route: Route) -> Result<Response, ApiError> {
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v, &[]));
    let store = server.store();
    match route {
        Route::Version => ok(discovery::version()),
        Route::Health => Ok((StatusCode::OK, "ok").into_response()),
        Route::CoreVersions => {
            let host = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
            ok(discovery::core_versions(host))
        }
        Route::Groups => ok(discovery::groups(&store.registry)),
        Route::Group(name) => ok(discovery::group(&store.registry, &name)?),
        Route::ResourceList { group, version } => ok(discovery::resource_list(&store.registry, &group, &version)?),
        Route::OpenApiV3Root => ok(openapi::root(&store.registry)),
        Route::OpenApiV3 { group, version } => ok(openapi::group_version(&store.registry, &group, &version)?),
        Route::OpenApiV2 | Route::Unknown | Route::Resource { .. } | Route::Control(_) => {
            Err(ApiError::path_not_found())
        }
    }
}

/// Request bodies the double cannot decode: Kubernetes protobuf beyond the few built-in creates
/// kubectl sends (see protobuf.rs), and CBOR.
fn undecodable(content_type: &str) -> bool {
    content_type.contains("protobuf") || content_type.contains("cbor")
}

fn parse_body(body: &Bytes, allow_yaml: bool) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(json_err) if allow_yaml => serde_yaml::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the request body is neither JSON ({json_err}) nor YAML ({e})"))
        }),
        Err(e) => Err(ApiError::bad_request(format!("the request body is not valid JSON: {e}"))),
    }
}

fn content_type(headers: &HeaderMap) -> &str {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json")
}

/// One request on a resource, with everything needed to answer it.
struct ResourceRequest<'a> {
    server: &'a Server,
    headers: &'a HeaderMap,
    params: &'a Params,
    resolved: &'a Resolved,
    body: &'a Bytes,
}

impl ResourceRequest<'_> {
    fn rt(&self) -> &Arc<ResourceType> {
        &self.resolved.rt
    }

    fn location(&self) -> Location<'_> {
        Location { rt: self.rt(), namespace: self.resolved.namespace.as_deref().unwrap_or_default() }
    }

    fn name(&self) -> &str {
        self.resolved.name.as_deref().unwrap_or_default()
    }

    fn part(&self) -> Part {
        match self.resolved.subresource.as_deref() {
            Some("status") => Part::Status,
            _ => Part::Main,
        }
    }

    fn representation(&self) -> Representation {
        let accept = self.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
        negotiate::negotiate(accept, self.params.get("includeObject"))
    }

    fn dry_run(&self) -> bool {
        self.params.get("dryRun").is_some_and(|v| v == "All")
    }

    fn write_options(&self) -> Result<WriteOptions, ApiError> {
        Ok(WriteOptions {
            dry_run: self.dry_run(),
            field_validation: FieldValidation::parse(self.params.get("fieldValidation").unwrap_or_default())?,
            field_manager: self.params.get("fieldManager").map(str::to_string),
        })
    }

    fn selectors(&self) -> Result<(LabelSelector, FieldSelector), ApiError> {
        let labels = LabelSelector::parse(self.params.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(self.params.get("fieldSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok((labels, fields))
    }

    /// Renders one object in the negotiated representation.
    fn single(&self, object: &Value, status: StatusCode, warnings: &[String]) -> Response {
        let body = match self.representation() {
            Representation::Full => object.clone(),
            Representation::Table { api_version, include } => {
                table::table(self.rt(), std::slice::from_ref(object), &api_version, include, None, true)
            }
            Representation::Metadata { api_version } => table::partial_metadata(object, &api_version),
        };
        json_response(status, &body, warnings)
    }

    fn written(&self, written: Written) -> Result<Response, ApiError> {
        let status = if written.created { StatusCode::CREATED } else { StatusCode::OK };
        Ok(self.single(&written.object, status, &written.warnings))
    }

    fn get(&self) -> Result<Response, ApiError> {
        let object = lifecycle::get(&self.server.store(), self.location(), self.name())?;
        Ok(self.single(&object, StatusCode::OK, &[]))
    }

    fn list(&self) -> Result<Response, ApiError> {
        let (labels, fields) = self.selectors()?;
        let rt = self.rt();
        // Pagination: the continue token encodes the (namespace, name) of the last item sent, and a
        // page starts right after it, so paging through a large list costs each object once.
        let after = match self.params.get("continue").filter(|t| !t.is_empty()) {
            Some(token) => Some(decode_continue(token).ok_or_else(|| ApiError::bad_request("invalid continue token"))?),
            None => None,
        };
        let limit = self.params.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
        let (items, resource_version, more) = {
            let store = self.server.store();
            let namespace = self.resolved.namespace.as_deref();
            let mut matching = store
                .list_after(&rt.storage_key(), namespace, after.as_ref())
                .map(|o| lifecycle::present(rt, o))
                .filter(|o| labels.matches(o) && fields.matches(o));
            let items: Vec<Value> = matching.by_ref().take(limit.unwrap_or(usize::MAX)).collect();
            // Like the real API server: the count of what is left only when no selector filters it.
            let more = match items.last() {
                Some(last) if limit.is_some() && labels.is_empty() && fields.is_empty() => {
                    let left = store.list_after(&rt.storage_key(), namespace, Some(&object_key(last))).count();
                    (left > 0).then_some(Some(left))
                }
                Some(_) if limit.is_some() => matching.next().map(|_| None),
                _ => None,
            };
            (items, store.resource_version(), more)
        };
        let mut list_meta = json!({ "resourceVersion": resource_version.to_string() });
        if let (Some(remaining), Some(last)) = (more, items.last()) {
            list_meta["continue"] = json!(encode_continue(&object_key(last)));
            if let Some(remaining) = remaining {
                list_meta["remainingItemCount"] = json!(remaining);
            }
        }
        let body = match self.representation() {
            Representation::Full => json!({
                "kind": rt.list_kind,
                "apiVersion": rt.api_version(),
                "metadata": list_meta,
                "items": items,
            }),
            Representation::Table { api_version, include } => {
                let mut t = table::table(rt, &items, &api_version, include, Some(resource_version), true);
                t["metadata"] = list_meta;
                t
            }
            Representation::Metadata { api_version } => {
                let mut l = table::partial_metadata_list(&items, &api_version, resource_version);
                l["metadata"] = list_meta;
                l
            }
        };
        Ok(json_response(StatusCode::OK, &body, &[]))
    }

    fn watch(&self) -> Result<Response, ApiError> {
        let (labels, fields) = self.selectors()?;
        let timeout = self
            .params
            .get("timeoutSeconds")
            .map(|t| t.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}"))))
            .transpose()?
            .filter(|t| *t > 0)
            .map(Duration::from_secs);
        let send_initial_events = self.params.flag("sendInitialEvents");
        if send_initial_events && self.params.get("resourceVersionMatch") != Some("NotOlderThan") {
            return Err(ApiError::bad_request("sendInitialEvents requires resourceVersionMatch=NotOlderThan"));
        }
        watch::start(
            self.server,
            WatchRequest {
                rt: self.rt().clone(),
                namespace: self.resolved.namespace.clone(),
                labels,
                fields,
                resource_version: self.params.get("resourceVersion").map(str::to_string),
                send_initial_events,
                allow_bookmarks: self.params.flag("allowWatchBookmarks"),
                timeout,
                representation: self.representation(),
            },
        )
    }

    /// The body of a create or update.
    fn object_body(&self) -> Result<Value, ApiError> {
        let ct = content_type(self.headers);
        if ct.starts_with("application/vnd.kubernetes.protobuf") {
            return protobuf::decode(self.body).map_err(|e| match e {
                ProtobufError::UnsupportedKind { .. } => ApiError::unsupported_media_type(ct),
                other => ApiError::bad_request(other.to_string()),
            });
        }
        if undecodable(ct) {
            return Err(ApiError::unsupported_media_type(ct));
        }
        parse_body(self.body, ct.contains("yaml"))
    }

    fn create(&self) -> Result<Response, ApiError> {
        let body = self.object_body()?;
        let opts = self.write_options()?;
        let written = lifecycle::create(&mut self.server.store(), self.location(), body, &opts)?;
        self.written(written)
    }

    fn update(&self) -> Result<Response, ApiError> {
        let body = self.object_body()?;
        let opts = self.write_options()?;
        let written =
            lifecycle::update(&mut self.server.store(), self.location(), self.name(), self.part(), body, &opts)?;
        self.written(written)
    }

    fn patch(&self) -> Result<Response, ApiError> {
        let ct = content_type(self.headers);
        let patch_type = PatchType::from_content_type(ct).ok_or_else(|| ApiError::unsupported_media_type(ct))?;
        let body = parse_body(self.body, patch_type == PatchType::Apply)?;
        let opts = self.write_options()?;
        let written = lifecycle::patch(
            &mut self.server.store(),
            self.location(),
            self.name(),
            self.part(),
            patch_type,
            &body,
            &opts,
        )?;
        self.written(written)
    }

    fn delete_options(&self) -> Result<(DeletePreconditions, bool), ApiError> {
        let mut pre = DeletePreconditions::default();
        let mut dry_run = self.dry_run();
        if undecodable(content_type(self.headers)) {
            tracing::warn!("ignoring DeleteOptions in an undecodable encoding");
        } else if !self.body.is_empty() {
            let options = parse_body(self.body, false)?;
            let text = |ptr: &str| options.pointer(ptr).and_then(Value::as_str).map(str::to_string);
            pre.uid = text("/preconditions/uid");
            pre.resource_version = text("/preconditions/resourceVersion");
            if let Some(modes) = options.get("dryRun").and_then(Value::as_array) {
                dry_run |= modes.iter().any(|m| m == "All");
            }
        }
        Ok((pre, dry_run))
    }

    fn delete(&self) -> Result<Response, ApiError> {
        let (pre, dry_run) = self.delete_options()?;
        let outcome = lifecycle::delete(&mut self.server.store(), self.location(), self.name(), &pre, dry_run)?;
        Ok(match outcome {
            Deleted::Pending(object) => json_response(StatusCode::OK, &object, &[]),
            Deleted::Gone(object) => json_response(StatusCode::OK, &lifecycle::deleted_status(self.rt(), &object), &[]),
        })
    }

    fn delete_collection(&self) -> Result<Response, ApiError> {
        let (labels, fields) = self.selectors()?;
        let (_, dry_run) = self.delete_options()?;
        let rt = self.rt();
        let mut store = self.server.store();
        let targets: Vec<(String, String)> = store
            .list(&rt.storage_key(), self.resolved.namespace.as_deref())
            .map(|o| lifecycle::present(rt, o))
            .filter(|o| labels.matches(o) && fields.matches(o))
            .map(|o| {
                (meta::namespace(&o).unwrap_or_default().to_string(), meta::name(&o).unwrap_or_default().to_string())
            })
            .collect();
        let mut items = Vec::new();
        for (namespace, name) in targets {
            let loc = Location { rt, namespace: &namespace };
            match lifecycle::delete(&mut store, loc, &name, &DeletePreconditions::default(), dry_run)? {
                Deleted::Pending(o) | Deleted::Gone(o) => items.push(o),
            }
        }
        let body = json!({
            "kind": rt.list_kind,
            "apiVersion": rt.api_version(),
            "metadata": { "resourceVersion": store.resource_version().to_string() },
            "items": items,
        });
        Ok(json_response(StatusCode::OK, &body, &[]))
    }
}

/// The (namespace, name) order objects are listed in.
fn object_key(object: &Value) -> (String, String) {
    (meta::namespace(object).unwrap_or_default().to_string(), meta::name(object).unwrap_or_default().to_string())
}

/// Hex of `namespace \n name`: opaque and URL-safe.
fn encode_continue(key: &(String, String)) -> String {
    format!("{}\n{}", key.0, key.1).bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Option<(String, String)> {
    if !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..token.len()).step_by(2).map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok()).collect();
    let text = String::from_utf8(bytes?).ok()?;
    let (namespace, name) = text.split_once('\n')?;
    Some((namespace.to_string(), name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let key = ("default".to_string(), "my-config".to_string());
        assert_eq!(decode_continue(&encode_continue(&key)), Some(key));
        assert_eq!(decode_continue("zz"), None);
    }
}
