//! Seeds FHIR resources from a folder of JSON files (single resources or Bundles) where they are
//! not stored yet. Used for the development data in `config/dev/fhir/`.

use std::path::Path;

use serde_json::Value;

use crate::domain::identity::is_fhir_id;
use crate::domain::scope::is_resource_type_name;
use crate::store::{ResourceStore, StoreError};

/// Why seeding stopped.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot read `{path}`: {reason}")]
    File { path: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Loads every `*.json` in `dir` (`now` in Unix milliseconds); returns how many were new.
pub async fn seed_folder(store: &dyn ResourceStore, dir: &Path, now: i64) -> Result<usize, SeedError> {
    let file_error = |path: &Path, reason: String| SeedError::File { path: path.display().to_string(), reason };
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| file_error(dir, e.to_string()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let mut created = 0;
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|e| file_error(&path, e.to_string()))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| file_error(&path, e.to_string()))?;
        let resources: Vec<Value> = if json["resourceType"] == "Bundle" {
            json["entry"].as_array().map(|es| es.iter().map(|e| e["resource"].clone()).collect()).unwrap_or_default()
        } else {
            vec![json]
        };
        for mut resource in resources {
            let kind = resource["resourceType"].as_str().unwrap_or_default().to_owned();
            let id = resource["id"].as_str().unwrap_or_default().to_owned();
            if !is_resource_type_name(&kind) || !is_fhir_id(&id) {
                return Err(file_error(&path, "every resource needs a resourceType and an id".into()));
            }
            if let Some(obj) = resource.as_object_mut() {
                obj.remove("meta");
            }
            let data = resource.to_string();
            let index = super::resources::index_of(&kind, &resource);
            let write = crate::store::ResourceWrite { resource_type: &kind, id: &id, data: &data, index: &index, now };
            if store.create_resource_if_absent(write).await? {
                created += 1;
            }
        }
    }
    Ok(created)
}
