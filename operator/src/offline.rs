//! `asya-operator render`: the objects the operator would apply for AsyncActor files, without a
//! cluster (flavors come from files too). Used to review changes and by the validation tests.

use crate::crd::{AsyncActor, AsyncActorPool, AsyncActorPoolSpec, Flavor, FlavorSpec, Placement};
use crate::pool::{self, Member, Placed, PoolRef};
use crate::render::{desired_objects, Settings};
use crate::{flavor, validate};
use anyhow::{bail, Context, Result};
use kube::ResourceExt;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The AsyncActor and Flavor documents of YAML files (other kinds are skipped).
#[derive(Debug, Default)]
pub struct Documents {
    /// Actors, in file order.
    pub actors: Vec<AsyncActor>,
    /// Flavors by name.
    pub flavors: BTreeMap<String, FlavorSpec>,
    /// Host pools by reference.
    pub pools: BTreeMap<PoolRef, AsyncActorPoolSpec>,
}

/// Reads every AsyncActor and Flavor of `text` into `docs`.
pub fn read_text(text: &str, origin: &str, docs: &mut Documents) -> Result<()> {
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value = serde_yaml_ng::Value::deserialize(document)
            .with_context(|| format!("parsing YAML in {origin}"))?;
        match value.get("kind").and_then(|k| k.as_str()) {
            Some("AsyncActor") => {
                let actor: AsyncActor = serde_yaml_ng::from_value(value)
                    .with_context(|| format!("reading an AsyncActor in {origin}"))?;
                docs.actors.push(actor);
            }
            Some("Flavor") => {
                let flavor: Flavor = serde_yaml_ng::from_value(value)
                    .with_context(|| format!("reading a Flavor in {origin}"))?;
                docs.flavors.insert(flavor.name_any(), flavor.spec);
            }
            Some("AsyncActorPool") => {
                let pool: AsyncActorPool = serde_yaml_ng::from_value(value)
                    .with_context(|| format!("reading an AsyncActorPool in {origin}"))?;
                let key = PoolRef {
                    namespace: pool.namespace().unwrap_or_else(|| "default".into()),
                    name: pool.name_any(),
                };
                docs.pools.insert(key, pool.spec);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Reads files (see [`read_text`]).
pub fn read_files(paths: &[impl AsRef<Path>]) -> Result<Documents> {
    let mut docs = Documents::default();
    for path in paths {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        read_text(&text, &path.display().to_string(), &mut docs)?;
    }
    Ok(docs)
}

/// Renders every actor: multi-document YAML of ConfigMaps, Deployments, TriggerAuthentications
/// and ScaledObjects. Pooled actors (wasm, by default) are rendered as their pools' objects
/// after the dedicated ones, unless `all_dedicated` renders every actor as `placement:
/// dedicated` (to compare the two layouts).
/// `default_namespace` is used for actors without one; `owner_uid`, when given, is used as the
/// actors' uid so owner references are rendered too.
pub fn render(
    docs: &Documents,
    settings: &Settings,
    default_namespace: &str,
    owner_uid: Option<&str>,
    all_dedicated: bool,
) -> Result<String> {
    if docs.actors.is_empty() {
        bail!("no AsyncActor documents given");
    }
    let mut out = String::new();
    let mut pooled: BTreeMap<PoolRef, Vec<Member>> = BTreeMap::new();
    for actor in &docs.actors {
        let mut actor = actor.clone();
        if actor.metadata.namespace.is_none() {
            actor.metadata.namespace = Some(default_namespace.to_owned());
        }
        if let Some(uid) = owner_uid {
            actor.metadata.uid = Some(uid.to_owned());
        }
        let name = actor.name_any();
        let namespace = actor.namespace().unwrap_or_default();
        let mut merged =
            flavor::merge(&actor.spec, &docs.flavors).with_context(|| format!("actor '{name}'"))?;
        if all_dedicated {
            merged.placement = Some(Placement::Dedicated);
            merged.pool = None;
        }
        validate::actor(&name, &merged).with_context(|| format!("actor '{name}'"))?;
        let placed = pool::choose(&namespace, &merged, &docs.pools)
            .with_context(|| format!("actor '{name}'"))?;
        if let Placed::Pool(pool) = placed {
            out.push_str(&format!("# actor {name}: host pool {pool}\n"));
            pooled.entry(pool).or_default().push(Member {
                namespace,
                name: name.clone(),
                created: String::new(),
                manifest: crate::render::host_manifest(&actor, &merged),
                secret_refs: merged.secret_refs.clone(),
                min_replicas: merged.scaling.as_ref().and_then(|s| s.min()),
            });
            continue;
        }
        let desired = desired_objects(&actor, &merged, settings);
        if desired.uses_jetstream() {
            out.push_str(&format!(
                "# actor {name}: stream {} ({}), consumer {} ({})\n",
                desired.stream.name,
                desired.stream.subjects.join(","),
                desired.consumer.name,
                desired.consumer.filter_subject
            ));
        } else {
            out.push_str(&format!(
                "# actor {name}: {} queue {} (declared by the host)\n",
                desired.transport.as_str(),
                crate::render::queue_name(&actor.namespace().unwrap_or_default(), &name)
            ));
        }
        for object in desired.objects() {
            out.push_str("---\n");
            out.push_str(&serde_yaml_ng::to_string(&object).context("writing YAML")?);
        }
    }
    for (pool, candidates) in pooled {
        let spec = docs.pools.get(&pool).cloned().unwrap_or_default();
        let assignment = pool::assign(&pool, &spec, candidates);
        if let Some((member, why)) = assignment.full.first() {
            bail!("actor '{}': {why}", member.name);
        }
        out.push_str(&format!(
            "# host pool {pool}: {} actor(s)\n",
            assignment.members.len()
        ));
        let desired = pool::desired_pool(&pool, &spec, &assignment.members, settings, owner_uid);
        for object in desired.objects() {
            out.push_str("---\n");
            out.push_str(&serde_yaml_ng::to_string(&object).context("writing YAML")?);
        }
    }
    Ok(out)
}
