//! The chart ships the CRDs generated from the Rust types: `charts/asya/crds/asya.sh_crds.yaml`
//! must equal `asya-operator crd` byte for byte.

use std::path::Path;

#[test]
fn chart_crds_match_the_generated_ones() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/asya/crds/asya.sh_crds.yaml");
    let shipped = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let generated = asya_operator::crd::crds_yaml();
    assert!(
        shipped == generated,
        "{} differs from the CRDs generated from operator/src/crd.rs; regenerate it with\n  \
         cargo run --release -p asya-operator -- crd > charts/asya/crds/asya.sh_crds.yaml",
        path.display()
    );
}
