//! The console's storage routes (`/api/v2/volumes`, `/api/v2/snapshots`).
//! What is not served answers 501 `NOT_SUPPORTED`, never a bare 404, which
//! both SDKs would read as "absent".
//!
//! Every call is scoped to the calling token: another token's volume is
//! 404, exactly as an absent one.

use std::sync::Arc;

use agent_proto::console::{CreateSnapshot, CreateVolume, ObjectRef, Snapshot, Volume};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use manager::{NewVolume, SnapshotInfo, StorageError, VolumeInfo};
use serde::Deserialize;

use crate::auth::{authenticate, authorize_sandbox};
use crate::{ApiError, AppState};

fn object_ref((id, slug): (String, String)) -> ObjectRef {
    ObjectRef { id, slug }
}

fn volume_json(v: VolumeInfo) -> Volume {
    let r = v.record;
    Volume {
        id: r.id,
        slug: r.slug,
        region: r.region,
        capacity: r.capacity,
        estimated_allocated_size: v.allocated_bytes,
        // Its blocks shared with a snapshot count as its own too.
        estimated_flattened_size: v.allocated_bytes,
        is_bootable: r.is_bootable,
        base_snapshot: r.base_snapshot.map(object_ref),
    }
}

fn snapshot_json(s: SnapshotInfo) -> Snapshot {
    let r = s.record;
    Snapshot {
        id: r.id,
        slug: r.slug,
        region: r.region,
        allocated_size: s.allocated_bytes,
        flattened_size: s.allocated_bytes,
        is_bootable: r.is_bootable,
        volume: object_ref(r.source),
        base_snapshot: r.base_snapshot.map(object_ref),
    }
}

/// A storage failure in the protocol's error shape.
pub fn storage_error(e: StorageError) -> ApiError {
    let (status, code) = match &e {
        StorageError::Invalid(_) => (StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
        StorageError::VolumeNotFound(_) => (StatusCode::NOT_FOUND, "VOLUME_NOT_FOUND"),
        StorageError::SnapshotNotFound(_) => (StatusCode::NOT_FOUND, "SNAPSHOT_NOT_FOUND"),
        StorageError::RootNotFound(_) => (StatusCode::NOT_FOUND, "VOLUME_NOT_FOUND"),
        StorageError::NotBootable(_) => (StatusCode::BAD_REQUEST, "NOT_BOOTABLE"),
        StorageError::Conflict(_)
        | StorageError::MountedIn { .. }
        | StorageError::Booted { .. } => (StatusCode::CONFLICT, "VOLUME_IN_USE"),
        StorageError::SlugTaken(_) => (StatusCode::CONFLICT, "SLUG_TAKEN"),
        StorageError::Quota(_) => (StatusCode::TOO_MANY_REQUESTS, "QUOTA_EXCEEDED"),
        StorageError::Full(_) => (StatusCode::INSUFFICIENT_STORAGE, "STORAGE_FULL"),
        StorageError::Unavailable(_) => (StatusCode::NOT_IMPLEMENTED, "NOT_SUPPORTED"),
        StorageError::Internal(_) => {
            tracing::warn!("storage: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
        }
    };
    ApiError::new(status, code, e.to_string())
}

/// The calling token and the daemon's volumes (501 when it serves none).
fn caller(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(store::TokenInfo, Arc<manager::Storage>), ApiError> {
    let token = authenticate(state, headers)?;
    let storage = state.manager.storage().map_err(storage_error)?.clone();
    Ok((token, storage))
}

fn manager_error(e: manager::ManagerError) -> ApiError {
    match e {
        manager::ManagerError::Storage(e) => storage_error(e),
        other => ApiError::internal(other.to_string()),
    }
}

/// Runs a blocking storage call (mkfs, fsync, the store) off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(storage_error)
}

/// `POST /api/v2/volumes` → 200 and the volume.
pub async fn create_volume(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Volume>, ApiError> {
    let (token, storage) = caller(&state, &headers)?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", m);
    let body: CreateVolume = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "expected a JSON object {{\"slug\", \"capacity\", \"region\"}}: {e}"
        ))
    })?;
    let slug = body
        .slug
        .ok_or_else(|| bad("\"slug\" is required".into()))?;
    let capacity = body
        .capacity
        .ok_or_else(|| bad("\"capacity\" is required (bytes, or a string like \"1GB\")".into()))
        .and_then(|c| manager::parse_capacity(&c).map_err(bad))?;

    let region = body.region.unwrap_or_else(|| "ord".to_string());
    if region.len() != 3 || !region.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(bad(format!(
            "region {region:?} is not a region name like \"ord\""
        )));
    }
    let owner = token.id;
    let info = blocking(move || {
        storage.create_volume(
            Some(&owner),
            NewVolume {
                slug,
                capacity,
                region,
                from: body.from,
            },
        )
    })
    .await?;
    Ok(Json(volume_json(info)))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    search: Option<String>,
}

/// `GET /api/v2/volumes` → a JSON array, one page (no `Link` header).
pub async fn list_volumes(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<Volume>>, ApiError> {
    let (token, storage) = caller(&state, &headers)?;
    let search = q.search.filter(|s| !s.is_empty());
    let list = blocking(move || storage.volumes(Some(&token.id), search.as_deref())).await?;
    Ok(Json(list.into_iter().map(volume_json).collect()))
}

/// `GET /api/v2/volumes/{idOrSlug}` → the volume, or 404.
pub async fn get_volume(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Result<Json<Volume>, ApiError> {
    let (token, storage) = caller(&state, &headers)?;
    let info = blocking(move || storage.volume(Some(&token.id), &key)).await?;
    Ok(Json(volume_json(info)))
}

/// `DELETE /api/v2/volumes/{idOrSlug}` → 204; 409 while mounted.
pub async fn delete_volume(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    let token = authenticate(&state, &headers)?;
    state
        .manager
        .delete_volume(Some(&token.id), &key)
        .await
        .map_err(manager_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The `{"slug"}` body both snapshot routes take.
fn snapshot_slug(body: &[u8]) -> Result<String, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", m);
    let body: CreateSnapshot = serde_json::from_slice(body)
        .map_err(|e| bad(format!("expected a JSON object {{\"slug\"}}: {e}")))?;
    body.slug.ok_or_else(|| bad("\"slug\" is required".into()))
}

/// `POST /api/v2/volumes/{idOrSlug}/snapshot {"slug"}` → the snapshot.
pub async fn create_snapshot(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Json<Snapshot>, ApiError> {
    let token = authenticate(&state, &headers)?;
    let slug = snapshot_slug(&body)?;
    let info = state
        .manager
        .create_snapshot(Some(&token.id), &key, &slug)
        .await
        .map_err(manager_error)?;
    Ok(Json(snapshot_json(info)))
}

/// `POST /api/v3/sandbox/{id}/snapshot {"slug"}` (airlock extension) →
/// the snapshot of the running sandbox's root filesystem: bootable
/// (`root`) and forkable (`volumes.create({from})`) like any snapshot.
/// Another token's sandbox, or one that has ended, is 404; a gVisor
/// sandbox 501.
pub async fn create_sandbox_snapshot(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Snapshot>, ApiError> {
    let token = authenticate(&state, &headers)?;
    authorize_sandbox(&state, &token, &id)?;
    let slug = snapshot_slug(&body)?;
    let info = state
        .manager
        .snapshot_sandbox(Some(&token.id), &id, &slug)
        .await
        .map_err(|e| match e {
            manager::ManagerError::NotFound(id) => ApiError::not_found(&id),
            other => manager_error(other),
        })?;
    Ok(Json(snapshot_json(info)))
}

/// `GET /api/v2/snapshots` → a JSON array, one page (no `Link` header).
pub async fn list_snapshots(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<Snapshot>>, ApiError> {
    let (token, storage) = caller(&state, &headers)?;
    let search = q.search.filter(|s| !s.is_empty());
    let list = blocking(move || storage.snapshots(Some(&token.id), search.as_deref())).await?;
    Ok(Json(list.into_iter().map(snapshot_json).collect()))
}

/// `GET /api/v2/snapshots/{idOrSlug}` → the snapshot, or 404.
pub async fn get_snapshot(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Result<Json<Snapshot>, ApiError> {
    let (token, storage) = caller(&state, &headers)?;
    let info = blocking(move || storage.snapshot(Some(&token.id), &key)).await?;
    Ok(Json(snapshot_json(info)))
}

/// `DELETE /api/v2/snapshots/{idOrSlug}` → 204.
pub async fn delete_snapshot(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    let token = authenticate(&state, &headers)?;
    state
        .manager
        .delete_snapshot(Some(&token.id), &key)
        .await
        .map_err(manager_error)?;
    Ok(StatusCode::NO_CONTENT)
}
