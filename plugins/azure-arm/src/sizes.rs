//! The table of Azure VM sizes a failover picks from.

use crate::ArmError;

/// One Azure VM size and the limits that matter to a failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmSize {
    /// ARM name, e.g. `Standard_D2s_v5`.
    pub name: &'static str,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Most data disks the size can attach.
    pub max_data_disks: u32,
    /// Most network interfaces the size can attach.
    pub max_nics: u32,
}

const GIB: u64 = 1024;

const fn size(
    name: &'static str,
    vcpus: u32,
    memory_gib: u64,
    max_data_disks: u32,
    max_nics: u32,
) -> VmSize {
    VmSize {
        name,
        vcpus,
        memory_mib: memory_gib * GIB,
        max_data_disks,
        max_nics,
    }
}

/// Common general-purpose sizes, smallest first: the order
/// [`choose_size_for`] tries them in.
///
/// The order is by vCPUs, then memory; on a tie the burstable B-series size
/// (cheapest) comes before the Dsv5 one. Only premium-storage-capable
/// sizes that support both generation 1 and 2 VMs are listed, so any disk
/// SKU and firmware fits any row:
///
/// * B-series (burstable), 1–2 vCPUs: a small VM that idles most of the
///   time. For a VM with sustained CPU load set [`crate::VmSpec::size`].
/// * Dsv5 (general purpose, 4 GiB per vCPU).
/// * Esv5 (memory optimised, 8 GiB per vCPU; 672 GiB at 96 vCPUs), for
///   memory-heavy VMs.
///
/// Figures from Microsoft's size pages: "B-series burstable", "Dv5 and
/// Dsv5-series" and "Ev5 and Esv5-series".
pub const VM_SIZES: &[VmSize] = &[
    size("Standard_B1s", 1, 1, 2, 2),
    size("Standard_B1ms", 1, 2, 2, 2),
    size("Standard_B2s", 2, 4, 4, 3),
    size("Standard_B2ms", 2, 8, 4, 3),
    size("Standard_D2s_v5", 2, 8, 4, 2),
    size("Standard_E2s_v5", 2, 16, 4, 2),
    size("Standard_D4s_v5", 4, 16, 8, 2),
    size("Standard_E4s_v5", 4, 32, 8, 2),
    size("Standard_D8s_v5", 8, 32, 16, 4),
    size("Standard_E8s_v5", 8, 64, 16, 4),
    size("Standard_D16s_v5", 16, 64, 32, 8),
    size("Standard_E16s_v5", 16, 128, 32, 8),
    size("Standard_E20s_v5", 20, 160, 32, 8),
    size("Standard_D32s_v5", 32, 128, 32, 8),
    size("Standard_E32s_v5", 32, 256, 32, 8),
    size("Standard_D48s_v5", 48, 192, 32, 8),
    size("Standard_E48s_v5", 48, 384, 32, 8),
    size("Standard_D64s_v5", 64, 256, 32, 8),
    size("Standard_E64s_v5", 64, 512, 32, 8),
    size("Standard_D96s_v5", 96, 384, 32, 8),
    size("Standard_E96s_v5", 96, 672, 32, 8),
];

/// The smallest size in [`VM_SIZES`] with at least `cpus` vCPUs and
/// `memory_mib` MiB of memory (for a VM with one NIC and no data disks).
///
/// ```
/// assert_eq!(lifeboat_azure_arm::choose_size(2, 4096).unwrap(), "Standard_B2s");
/// assert_eq!(lifeboat_azure_arm::choose_size(4, 24 * 1024).unwrap(), "Standard_E4s_v5");
/// assert!(lifeboat_azure_arm::choose_size(128, 1024).is_err());
/// ```
pub fn choose_size(cpus: u32, memory_mib: u64) -> Result<&'static str, ArmError> {
    choose_size_for(cpus, memory_mib, 0, 1).map(|s| s.name)
}

/// The smallest size in [`VM_SIZES`] with at least `cpus` vCPUs and
/// `memory_mib` MiB that can also attach `data_disks` data disks and `nics`
/// network interfaces.
///
/// Zero CPUs or zero memory is an input error, not a request for the
/// smallest size.
pub fn choose_size_for(
    cpus: u32,
    memory_mib: u64,
    data_disks: usize,
    nics: usize,
) -> Result<&'static VmSize, ArmError> {
    if cpus == 0 {
        return Err(ArmError::Invalid {
            field: "cpus".into(),
            reason: "must be at least 1".into(),
        });
    }
    if memory_mib == 0 {
        return Err(ArmError::Invalid {
            field: "memory_mib".into(),
            reason: "must be at least 1".into(),
        });
    }
    VM_SIZES
        .iter()
        .find(|s| {
            s.vcpus >= cpus
                && s.memory_mib >= memory_mib
                && fits(data_disks, s.max_data_disks)
                && fits(nics, s.max_nics)
        })
        .ok_or(ArmError::NoSize {
            cpus,
            memory_mib,
            data_disks,
            nics,
            largest: VM_SIZES.last().map_or("none", |s| s.name),
        })
}

/// The table row for a size name (exact ARM spelling), if it has one.
pub(crate) fn lookup(name: &str) -> Option<&'static VmSize> {
    VM_SIZES.iter().find(|s| s.name.eq_ignore_ascii_case(name))
}

pub(crate) fn fits(have: usize, max: u32) -> bool {
    u32::try_from(have).is_ok_and(|h| h <= max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_smallest_first() {
        for pair in VM_SIZES.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(
                (a.vcpus, a.memory_mib) <= (b.vcpus, b.memory_mib),
                "{} must come before {}",
                a.name,
                b.name
            );
        }
    }

    #[test]
    fn exact_fits_take_the_row() {
        for s in VM_SIZES {
            let got = choose_size_for(s.vcpus, s.memory_mib, 0, 1).unwrap();
            assert_eq!(
                (got.vcpus, got.memory_mib),
                (s.vcpus, s.memory_mib),
                "{}",
                s.name
            );
        }
    }

    #[test]
    fn smallest_that_fits() {
        let cases: &[(u32, u64, &str)] = &[
            (1, 512, "Standard_B1s"),
            (1, 1024, "Standard_B1s"),
            (1, 1025, "Standard_B1ms"),
            (1, 3 * 1024, "Standard_B2s"),
            (2, 4096, "Standard_B2s"),
            (2, 6 * 1024, "Standard_B2ms"),
            (2, 12 * 1024, "Standard_E2s_v5"),
            (3, 1024, "Standard_D4s_v5"),
            (4, 16 * 1024, "Standard_D4s_v5"),
            (4, 24 * 1024, "Standard_E4s_v5"),
            (4, 40 * 1024, "Standard_E8s_v5"),
            (6, 8 * 1024, "Standard_D8s_v5"),
            (8, 64 * 1024, "Standard_E8s_v5"),
            (12, 48 * 1024, "Standard_D16s_v5"),
            (16, 100 * 1024, "Standard_E16s_v5"),
            (18, 64 * 1024, "Standard_E20s_v5"),
            (24, 100 * 1024, "Standard_D32s_v5"),
            (64, 300 * 1024, "Standard_E64s_v5"),
            (96, 384 * 1024, "Standard_D96s_v5"),
            (96, 600 * 1024, "Standard_E96s_v5"),
        ];
        for &(cpus, mem, want) in cases {
            assert_eq!(
                choose_size(cpus, mem).unwrap(),
                want,
                "{cpus} vCPUs, {mem} MiB"
            );
        }
    }

    #[test]
    fn disks_and_nics_push_the_size_up() {
        assert_eq!(choose_size_for(1, 1024, 2, 2).unwrap().name, "Standard_B1s");
        assert_eq!(choose_size_for(1, 1024, 3, 1).unwrap().name, "Standard_B2s");
        assert_eq!(choose_size_for(1, 1024, 0, 3).unwrap().name, "Standard_B2s");
        assert_eq!(
            choose_size_for(2, 8192, 0, 3).unwrap().name,
            "Standard_B2ms"
        );
        assert_eq!(
            choose_size_for(2, 8192, 5, 1).unwrap().name,
            "Standard_D4s_v5"
        );
        assert_eq!(
            choose_size_for(2, 8192, 0, 5).unwrap().name,
            "Standard_D16s_v5"
        );
        assert_eq!(
            choose_size_for(4, 4096, 20, 1).unwrap().name,
            "Standard_D16s_v5"
        );
    }

    #[test]
    fn nothing_fits_is_a_clear_error() {
        for (cpus, mem, disks, nics) in [
            (97, 1024, 0, 1),
            (2, 673 * 1024, 0, 1),
            (2, 1024, 33, 1),
            (2, 1024, 0, 9),
        ] {
            let err = choose_size_for(cpus, mem, disks, nics).unwrap_err();
            assert!(matches!(err, ArmError::NoSize { .. }), "{err:?}");
            let text = err.to_string();
            assert!(
                text.contains("no VM size") && text.contains("Standard_E96s_v5"),
                "{text}"
            );
        }
        assert_eq!(
            choose_size(0, 1024).unwrap_err().to_string(),
            "invalid cpus: must be at least 1"
        );
        assert_eq!(
            choose_size(1, 0).unwrap_err().to_string(),
            "invalid memory_mib: must be at least 1"
        );
    }

    #[test]
    fn lookup_is_case_insensitive() {
        assert_eq!(lookup("standard_d2s_v5").map(|s| s.vcpus), Some(2));
        assert!(lookup("Standard_M416ms_v2").is_none());
    }
}
