//! The console API's storage objects (`/api/v2/volumes`,
//! `/api/v2/snapshots`) as they travel: snake_case, exactly the hosted
//! service's keys (the Python SDK's own tests compare whole objects). The
//! daemon writes them and reads the request bodies; `airlock volume` and
//! `airlock snapshot` read them and write the bodies. Also the reply of
//! `expose/ssh`, a sandbox-host call the daemon answers the same way.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `{id, slug}`: a volume or snapshot another object names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub id: String,
    pub slug: String,
}

/// A volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub id: String,
    pub slug: String,
    pub region: String,
    /// Bytes.
    pub capacity: u64,
    /// Bytes its image uses.
    pub estimated_allocated_size: u64,
    pub estimated_flattened_size: u64,
    pub is_bootable: bool,
    /// The snapshot it was forked from.
    pub base_snapshot: Option<ObjectRef>,
}

/// A snapshot. The JS SDK reads `volume` (its source), the Python SDK's
/// type has `base_snapshot` (the source's own base): both are sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub slug: String,
    pub region: String,
    pub allocated_size: u64,
    pub flattened_size: u64,
    pub is_bootable: bool,
    pub volume: ObjectRef,
    pub base_snapshot: Option<ObjectRef>,
}

/// `POST /api/v2/volumes`'s body. Fields are optional so that the daemon,
/// not serde, says which one is missing; unknown keys are ignored (the JS
/// SDK's static `Volume.create` posts its whole options object, token
/// included, so this body is never logged).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateVolume {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    /// Bytes, or a string with a unit (`"1GB"`, `"512MiB"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A snapshot to fork, or `builtin:NAME`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// `POST /api/v2/volumes/{idOrSlug}/snapshot`'s body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSnapshot {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_volume_has_exactly_the_hosted_keys() {
        let v = Volume {
            id: "vol_ord_x".into(),
            slug: "cache".into(),
            region: "ord".into(),
            capacity: 1_000_000_000,
            estimated_allocated_size: 8797184,
            estimated_flattened_size: 8797184,
            is_bootable: false,
            base_snapshot: None,
        };
        let wire = serde_json::to_value(&v).unwrap();
        assert_eq!(
            wire,
            json!({"id": "vol_ord_x", "slug": "cache", "region": "ord", "capacity": 1000000000,
                   "estimated_allocated_size": 8797184, "estimated_flattened_size": 8797184,
                   "is_bootable": false, "base_snapshot": null})
        );
        assert_eq!(serde_json::from_value::<Volume>(wire).unwrap(), v);
    }

    #[test]
    fn bodies_ignore_unknown_keys_and_leave_missing_ones_to_the_daemon() {
        let b: CreateVolume = serde_json::from_value(
            json!({"slug": "a", "capacity": "1GB", "token": "ddo_secret", "org": null}),
        )
        .unwrap();
        assert_eq!(b.slug.as_deref(), Some("a"));
        assert_eq!(b.capacity, Some(json!("1GB")));
        assert_eq!(b.region, None);
        assert_eq!(
            serde_json::to_value(CreateSnapshot::default()).unwrap(),
            json!({})
        );
    }
}

/// `POST /api/v3/sandbox/{id}/expose/ssh`'s reply: `ssh -p PORT
/// USERNAME@HOSTNAME` logs into the sandbox. The JS SDK keeps only
/// `hostname` and `username` (it assumes port 22); the Python SDK returns
/// all three.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposedSsh {
    pub hostname: String,
    pub username: String,
    pub port: u16,
}
