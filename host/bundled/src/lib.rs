//! First-party plugins embedded in the host, addressed as `builtin:NAME`.

/// A plugin that ships inside the `lifeboat` binary.
#[derive(Debug, Clone, Copy)]
pub struct Bundled {
    pub name: &'static str,
    pub wasm: &'static [u8],
}

/// Every bundled plugin, by name.
pub const ALL: &[Bundled] = &[
    Bundled {
        name: "demo",
        wasm: include_bytes!(env!("LIFEBOAT_BUNDLED_DEMO")),
    },
    Bundled {
        name: "vmware",
        wasm: include_bytes!(env!("LIFEBOAT_BUNDLED_VMWARE")),
    },
    Bundled {
        name: "azure",
        wasm: include_bytes!(env!("LIFEBOAT_BUNDLED_AZURE")),
    },
    Bundled {
        name: "http-health-probe",
        wasm: include_bytes!(env!("LIFEBOAT_BUNDLED_HTTP_HEALTH_PROBE")),
    },
    Bundled {
        name: "hyperv",
        wasm: include_bytes!(env!("LIFEBOAT_BUNDLED_HYPERV")),
    },
];

/// The bundled plugin called `name`.
pub fn get(name: &str) -> Option<&'static Bundled> {
    ALL.iter().find(|b| b.name == name)
}
