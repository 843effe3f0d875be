//! Watch streams: newline-delimited `{"type": ..., "object": ...}` events with resourceVersion
//! semantics, bookmarks, timeouts, streaming lists and 410 Gone for expired history.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::SinkExt;
use futures::channel::mpsc;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::error::ApiError;
use crate::lifecycle::present;
use crate::meta;
use crate::negotiate::Representation;
use crate::registry::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::server::Server;
use crate::store::{Event, EventType};
use crate::table;

/// What a watch request asked for.
pub struct WatchRequest {
    pub rt: Arc<ResourceType>,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub resource_version: Option<String>,
    pub send_initial_events: bool,
    pub allow_bookmarks: bool,
    pub timeout: Option<Duration>,
    pub representation: Representation,
}

impl WatchRequest {
    fn matches(&self, object: &Value) -> bool {
        // Selectors see the object as the watched version shows it (events.k8s.io renames fields).
        let shown;
        let object = if crate::events::is_events_v1(&self.rt) {
            shown = present(&self.rt, object);
            &shown
        } else {
            object
        };
        self.namespace.as_deref().is_none_or(|ns| meta::namespace(object) == Some(ns))
            && self.labels.matches(object)
            && self.fields.matches(object)
    }

    /// The event this watch sees for a change, taking selector transitions into account.
    fn view(&self, event: &Event) -> Option<(EventType, Arc<Value>)> {
        if event.key != self.rt.storage_key() {
            return None;
        }
        let now = self.matches(&event.object);
        let before = event.previous.as_deref().is_some_and(|p| self.matches(p));
        let event_type = match (event.event_type, before, now) {
            (EventType::Added, _, true) => EventType::Added,
            (EventType::Deleted, true, _) | (EventType::Deleted, _, true) => EventType::Deleted,
            (EventType::Modified, true, true) => EventType::Modified,
            (EventType::Modified, false, true) => EventType::Added,
            (EventType::Modified, true, false) => EventType::Deleted,
            _ => return None,
        };
        Some((event_type, event.object.clone()))
    }
}

enum Frame {
    Object(EventType, Arc<Value>),
    Bookmark { resource_version: u64, initial_events_end: bool },
    Error(ApiError),
}

struct Encoder {
    rt: Arc<ResourceType>,
    representation: Representation,
    columns_sent: bool,
}

impl Encoder {
    fn encode(&mut self, frame: Frame) -> Bytes {
        let (event_type, object) = match frame {
            Frame::Object(event_type, object) => {
                let shown = present(&self.rt, &object);
                let object = match &self.representation {
                    Representation::Full => shown,
                    Representation::Table { api_version, include } => {
                        let with_columns = !self.columns_sent;
                        self.columns_sent = true;
                        table::table(&self.rt, &[shown], api_version, *include, None, with_columns)
                    }
                    Representation::Metadata { api_version } => table::partial_metadata(&shown, api_version),
                };
                (event_type.as_str(), object)
            }
            Frame::Bookmark { resource_version, initial_events_end } => {
                let mut metadata = json!({ "resourceVersion": resource_version.to_string() });
                if initial_events_end {
                    metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
                }
                ("BOOKMARK", json!({ "kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": metadata }))
            }
            Frame::Error(e) => ("ERROR", e.to_status()),
        };
        let mut line = json!({ "type": event_type, "object": object }).to_string();
        line.push('\n');
        Bytes::from(line)
    }
}

fn expired(requested: &str, oldest: u64) -> ApiError {
    ApiError::expired(format!("too old resource version: {requested} ({oldest})"))
}

/// Starts a watch: computes the initial events under the store lock, then streams.
pub fn start(server: &Server, request: WatchRequest) -> Result<Response, ApiError> {
    let rv_param = request.resource_version.clone().filter(|rv| !rv.is_empty() && rv != "0");
    let requested_rv = match &rv_param {
        Some(rv) => {
            Some(rv.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?)
        }
        None => None,
    };
    let forced_expiry = server.faults().take_watch_expiry();
    let mut initial = Vec::new();
    let mut live = None;
    let mut last_rv;
    {
        let store = server.store();
        last_rv = store.resource_version();
        if forced_expiry {
            let oldest = store.resource_version() + 1;
            initial.push(Frame::Error(expired(rv_param.as_deref().unwrap_or("0"), oldest)));
        } else if requested_rv.is_none() || request.send_initial_events {
            let key = request.rt.storage_key();
            for object in store.list(&key, request.namespace.as_deref()).filter(|o| request.matches(o)) {
                initial.push(Frame::Object(EventType::Added, Arc::new(object.clone())));
            }
            if request.send_initial_events {
                initial.push(Frame::Bookmark { resource_version: last_rv, initial_events_end: true });
            }
            live = Some(store.subscribe());
        } else if let Some(rv) = requested_rv {
            match store.events_since(rv) {
                Ok((replay, rx)) => {
                    initial.extend(replay.iter().filter_map(|e| request.view(e)).map(|(t, o)| Frame::Object(t, o)));
                    live = Some(rx);
                }
                Err(too_old) => initial.push(Frame::Error(expired(&too_old.requested.to_string(), too_old.oldest))),
            }
        }
    }

    let (mut tx, body_rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let mut encoder =
        Encoder { rt: request.rt.clone(), representation: request.representation.clone(), columns_sent: false };
    let config = server.config().clone();
    let timeout = request.timeout.unwrap_or(config.default_watch_timeout);
    let mut epoch = server.0.watch_epoch.subscribe();
    let resource = request.rt.stats_label();
    server.stats().watch_opened(&resource);
    let guard = OpenWatchGuard(server.clone(), resource);

    tokio::spawn(async move {
        let _guard = guard;
        for frame in initial {
            if tx.send(Ok(encoder.encode(frame))).await.is_err() {
                return;
            }
        }
        let Some(mut rx) = live else { return };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + config.bookmark_interval, config.bookmark_interval);
        loop {
            let frame = tokio::select! {
                _ = &mut deadline => {
                    if request.allow_bookmarks {
                        let _ = tx.send(Ok(encoder.encode(Frame::Bookmark { resource_version: last_rv, initial_events_end: false }))).await;
                    }
                    return;
                }
                _ = epoch.changed() => return,
                _ = ticker.tick() => {
                    if !request.allow_bookmarks {
                        if tx.is_closed() { return; }
                        continue;
                    }
                    Frame::Bookmark { resource_version: last_rv, initial_events_end: false }
                }
                received = rx.recv() => match received {
                    Ok(event) => {
                        if event.resource_version <= last_rv {
                            continue;
                        }
                        last_rv = event.resource_version;
                        match request.view(&event) {
                            Some((t, o)) => Frame::Object(t, o),
                            None => continue,
                        }
                    }
                    Err(RecvError::Lagged(_)) => Frame::Error(expired(&last_rv.to_string(), last_rv + 1)),
                    Err(RecvError::Closed) => return,
                },
            };
            let is_error = matches!(frame, Frame::Error(_));
            if tx.send(Ok(encoder.encode(frame))).await.is_err() || is_error {
                return;
            }
        }
    });

    let mut response = (StatusCode::OK, Body::from_stream(body_rx)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache, private"));
    Ok(response)
}

/// Keeps the open-watch gauge right however the stream ends.
struct OpenWatchGuard(Server, String);

impl Drop for OpenWatchGuard {
    fn drop(&mut self) {
        self.0.stats().watch_closed(&self.1);
    }
}
