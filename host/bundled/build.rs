//! Build the first-party plugins and hand their paths to `include_bytes!`.

use std::path::PathBuf;

/// (name used in `builtin:NAME`, cargo package)
const PLUGINS: &[(&str, &str)] = &[
    ("demo", "lifeboat-plugin-demo"),
    ("vmware", "lifeboat-plugin-vmware"),
    ("azure", "lifeboat-plugin-azure"),
    ("http-health-probe", "http-health-probe"),
    ("hyperv", "lifeboat-plugin-hyperv"),
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = lifeboat_wasm_build::workspace_root(&manifest);
    for dir in ["plugins", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );
    let packages: Vec<&str> = PLUGINS.iter().map(|(_, p)| *p).collect();
    match lifeboat_wasm_build::build(&root, &packages) {
        Ok(paths) => {
            for ((name, _), path) in PLUGINS.iter().zip(paths) {
                println!(
                    "cargo:rustc-env=LIFEBOAT_BUNDLED_{}={}",
                    name.to_uppercase().replace('-', "_"),
                    path.display()
                );
            }
        }
        Err(e) => {
            // A build script reports errors by failing: say exactly what to do.
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
