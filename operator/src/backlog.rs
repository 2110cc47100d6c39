//! `GET /v1/pools/{namespace}/{pool}/backlog`: the total backlog of a NATS pool's members, the
//! one number KEDA's `metrics-api` trigger scales the pool's hosts on (so a pool of 300 actors
//! has one trigger, not 300).
//!
//! The members are read from the pool's ConfigMap (its keys are `<namespace>.<actor>.yaml`), so
//! every operator replica answers the same, the leader or not; each member's backlog is its
//! JetStream consumer's pending plus unacknowledged messages.

use crate::jetstream::JetStreamAdmin;
use crate::pool::PoolRef;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Json;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};

/// What the endpoint needs once the operator is connected.
#[derive(Default)]
pub struct PoolBacklog {
    parts: OnceLock<(Client, Arc<dyn JetStreamAdmin>)>,
}

impl PoolBacklog {
    /// Makes the endpoint answer (before this it is 503).
    pub fn connect(&self, client: Client, jetstream: Arc<dyn JetStreamAdmin>) {
        let _ = self.parts.set((client, jetstream));
    }
}

/// The member `(namespace, actor)` of a pool ConfigMap key.
pub fn member_of_key(key: &str) -> Option<(&str, &str)> {
    let stem = key.strip_suffix(".yaml")?;
    stem.split_once('.')
}

async fn backlog(
    State(state): State<Arc<PoolBacklog>>,
    Path((namespace, pool)): Path<(String, String)>,
) -> Result<Json<Value>, (StatusCode, String)> {
    let Some((client, jetstream)) = state.parts.get() else {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "starting\n".into()));
    };
    let pool = PoolRef {
        namespace,
        name: pool,
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &pool.namespace);
    let config_map = config_maps
        .get_opt(&pool.object_name())
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, format!("kubernetes API: {e}\n")))?
        .ok_or_else(|| (StatusCode::NOT_FOUND, format!("no pool {pool}\n")))?;
    let members: Vec<(String, String)> = config_map
        .data
        .unwrap_or_default()
        .keys()
        .filter_map(|k| member_of_key(k).map(|(ns, a)| (ns.to_owned(), a.to_owned())))
        .collect();
    let count = members.len();
    let total: u64 = futures::stream::iter(members)
        .map(|(ns, actor)| {
            let jetstream = jetstream.clone();
            async move {
                jetstream
                    .consumer_backlog(&crate::render::stream_name(&ns), &actor)
                    .await
            }
        })
        .buffer_unordered(16)
        .try_fold(0u64, |sum, n| async move { Ok(sum + n) })
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, format!("{e}\n")))?;
    Ok(Json(json!({"backlog": total, "actors": count})))
}

/// The router of the endpoint.
pub fn router(state: Arc<PoolBacklog>) -> axum::Router {
    axum::Router::new()
        .route("/v1/pools/{namespace}/{pool}/backlog", get(backlog))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_members() {
        assert_eq!(member_of_key("team-a.echo.yaml"), Some(("team-a", "echo")));
        assert_eq!(member_of_key("README"), None);
    }
}
