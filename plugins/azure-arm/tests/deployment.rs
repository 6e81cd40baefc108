//! What `deployment` builds, and what it refuses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use lifeboat_azure_arm::{ArmError, DiskSku, Firmware, deployment, validate};
use serde_json::Value;

fn resources(doc: &Value) -> &Vec<Value> {
    doc["properties"]["template"]["resources"]
        .as_array()
        .unwrap()
}

fn of_type<'a>(doc: &'a Value, ty: &str) -> Vec<&'a Value> {
    resources(doc).iter().filter(|r| r["type"] == ty).collect()
}

fn vm(doc: &Value) -> &Value {
    of_type(doc, "Microsoft.Compute/virtualMachines")[0]
}

#[test]
fn envelope() {
    let doc = deployment(&bios_one_disk(), None).unwrap();
    assert_eq!(doc["properties"]["mode"], "Incremental");
    let t = &doc["properties"]["template"];
    assert_eq!(
        t["$schema"],
        "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
    );
    assert_eq!(t["contentVersion"], "1.0.0.0");
    let keys: Vec<&String> = t.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["$schema", "contentVersion", "resources"]);
    let types: Vec<&str> = resources(&doc)
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "Microsoft.Compute/disks",
            "Microsoft.Network/networkInterfaces",
            "Microsoft.Compute/virtualMachines"
        ]
    );
}

#[test]
fn bios_vm_with_one_dynamic_nic() {
    let doc = deployment(&bios_one_disk(), None).unwrap();
    let disk = of_type(&doc, "Microsoft.Compute/disks")[0];
    assert_eq!(disk["name"], "web01-os");
    assert_eq!(disk["location"], "westeurope");
    assert_eq!(disk["sku"]["name"], "Standard_LRS");
    assert_eq!(disk["properties"]["osType"], "Linux");
    assert_eq!(disk["properties"]["hyperVGeneration"], "V1");
    let creation = &disk["properties"]["creationData"];
    assert_eq!(creation["createOption"], "Import");
    assert_eq!(creation["sourceUri"], blob("web01-os"));
    assert_eq!(creation["storageAccountId"], storage_account());

    let nic = of_type(&doc, "Microsoft.Network/networkInterfaces")[0];
    let ipc = &nic["properties"]["ipConfigurations"][0]["properties"];
    assert_eq!(ipc["privateIPAllocationMethod"], "Dynamic");
    assert!(ipc.get("privateIPAddress").is_none());
    assert_eq!(ipc["subnet"]["id"], subnet("prod-vnet", "web"));
    assert!(nic.get("dependsOn").is_none());

    let vm = vm(&doc);
    assert_eq!(
        vm["properties"]["hardwareProfile"]["vmSize"],
        "Standard_B2s"
    );
    let os = &vm["properties"]["storageProfile"]["osDisk"];
    assert_eq!(os["createOption"], "Attach");
    assert_eq!(os["osType"], "Linux");
    assert_eq!(
        os["managedDisk"]["id"],
        "[resourceId('Microsoft.Compute/disks', 'web01-os')]"
    );
    assert!(
        vm["properties"]["storageProfile"]
            .get("dataDisks")
            .is_none()
    );
    assert_eq!(
        vm["properties"]["diagnosticsProfile"]["bootDiagnostics"]["enabled"],
        true
    );
    assert!(vm["properties"].get("securityProfile").is_none());
    assert_eq!(
        vm["dependsOn"],
        serde_json::json!([
            "[resourceId('Microsoft.Compute/disks', 'web01-os')]",
            "[resourceId('Microsoft.Network/networkInterfaces', 'web01-nic0')]"
        ])
    );
    assert_eq!(vm["tags"]["lifeboat-plan"], "web-tier");
}

#[test]
fn uefi_vm_with_data_disks_and_static_ips() {
    let doc = deployment(&uefi_three_disks(), None).unwrap();
    let disks = of_type(&doc, "Microsoft.Compute/disks");
    assert_eq!(disks.len(), 3);
    let os = disks.iter().find(|d| d["name"] == "db01-os").unwrap();
    assert_eq!(os["properties"]["hyperVGeneration"], "V2");
    assert_eq!(os["properties"]["osType"], "Windows");
    assert_eq!(os["sku"]["name"], "Premium_LRS");
    for data in disks.iter().filter(|d| d["name"] != "db01-os") {
        assert!(data["properties"].get("osType").is_none());
        assert!(data["properties"].get("hyperVGeneration").is_none());
    }

    let vm = vm(&doc);
    // 4 vCPUs, 24 GiB: memory-heavy, so the E-series.
    assert_eq!(
        vm["properties"]["hardwareProfile"]["vmSize"],
        "Standard_E4s_v5"
    );
    let data = vm["properties"]["storageProfile"]["dataDisks"]
        .as_array()
        .unwrap();
    let luns: Vec<(u64, &str)> = data
        .iter()
        .map(|d| {
            (
                d["lun"].as_u64().unwrap(),
                d["managedDisk"]["id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        luns,
        [
            (0, "[resourceId('Microsoft.Compute/disks', 'db01-data0')]"),
            (1, "[resourceId('Microsoft.Compute/disks', 'db01-logs')]"),
        ]
    );
    let nics = vm["properties"]["networkProfile"]["networkInterfaces"]
        .as_array()
        .unwrap();
    let primary: Vec<bool> = nics
        .iter()
        .map(|n| n["properties"]["primary"].as_bool().unwrap())
        .collect();
    assert_eq!(primary, [true, false]);

    let nic_resources = of_type(&doc, "Microsoft.Network/networkInterfaces");
    let ips: Vec<(&str, &str, &str)> = nic_resources
        .iter()
        .map(|n| {
            let p = &n["properties"]["ipConfigurations"][0]["properties"];
            (
                p["privateIPAllocationMethod"].as_str().unwrap(),
                p["privateIPAddress"].as_str().unwrap(),
                n["tags"]["lifeboat-source-mac"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ips,
        [
            ("Static", "10.1.2.10", "00:50:56:9a:01:02"),
            ("Static", "10.1.3.10", "00:50:56:9a:01:03"),
        ]
    );
    // A tag value that looks like an ARM expression is escaped.
    assert_eq!(vm["tags"]["owner"], "[[dba-team]");
}

#[test]
fn test_failover_builds_an_isolated_network() {
    let (spec, net) = test_failover();
    let doc = deployment(&spec, Some(&net)).unwrap();
    let vnet = &resources(&doc)[0];
    assert_eq!(vnet["type"], "Microsoft.Network/virtualNetworks");
    assert_eq!(vnet["name"], "lifeboat-test-vnet");
    assert_eq!(vnet["location"], "northeurope");
    assert_eq!(
        vnet["properties"]["addressSpace"]["addressPrefixes"][0],
        "10.99.0.0/16"
    );
    assert_eq!(vnet["properties"]["subnets"][0]["name"], "isolated");
    assert_eq!(
        vnet["properties"]["subnets"][0]["properties"]["addressPrefix"],
        "10.99.1.0/24"
    );

    let nics = of_type(&doc, "Microsoft.Network/networkInterfaces");
    let test_subnet = "[resourceId('Microsoft.Network/virtualNetworks/subnets', 'lifeboat-test-vnet', 'isolated')]";
    let mut methods = Vec::new();
    for nic in &nics {
        let p = &nic["properties"]["ipConfigurations"][0]["properties"];
        assert_eq!(p["subnet"]["id"], test_subnet);
        assert_eq!(
            nic["dependsOn"],
            serde_json::json!([
                "[resourceId('Microsoft.Network/virtualNetworks', 'lifeboat-test-vnet')]"
            ])
        );
        methods.push((
            p["privateIPAllocationMethod"].as_str().unwrap(),
            p.get("privateIPAddress").and_then(Value::as_str),
        ));
    }
    // Inside the test subnet: kept. Outside: dynamic.
    assert_eq!(methods, [("Static", Some("10.99.1.20")), ("Dynamic", None)]);

    let vm = vm(&doc);
    assert_eq!(
        vm["properties"]["hardwareProfile"]["vmSize"],
        "Standard_D2s_v5"
    );
    assert_eq!(
        vm["properties"]["diagnosticsProfile"]["bootDiagnostics"]["enabled"],
        false
    );
    assert!(vm.get("tags").is_none());
}

#[test]
fn test_failover_drops_reserved_and_repeated_static_ips() {
    let (mut spec, net) = test_failover();
    spec.size = None;
    spec.nics[0].private_ip = Some("10.99.1.3".into()); // Azure-reserved
    spec.nics[1].private_ip = Some("10.99.1.50".into());
    spec.nics.push(nic(
        "app01-nic2",
        subnet("other", "app"),
        Some("10.99.1.50"),
        None,
    ));
    let doc = deployment(&spec, Some(&net)).unwrap();
    let got: Vec<&str> = of_type(&doc, "Microsoft.Network/networkInterfaces")
        .iter()
        .map(|n| {
            n["properties"]["ipConfigurations"][0]["properties"]["privateIPAllocationMethod"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(got, ["Dynamic", "Static", "Dynamic"]);
    // Three NICs need a size that takes three.
    assert_eq!(
        vm(&doc)["properties"]["hardwareProfile"]["vmSize"],
        "Standard_B2s"
    );
}

#[test]
fn same_input_same_bytes() {
    let (spec, net) = test_failover();
    for (s, n) in [
        (bios_one_disk(), None),
        (uefi_three_disks(), None),
        (spec, Some(net)),
    ] {
        let a = serde_json::to_string(&deployment(&s, n.as_ref()).unwrap()).unwrap();
        let b =
            serde_json::to_string(&deployment(&s.clone(), n.clone().as_ref()).unwrap()).unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn specs_round_trip_through_serde() {
    let spec = uefi_three_disks();
    let text = serde_json::to_string(&spec).unwrap();
    assert!(
        text.contains("\"firmware\":\"uefi\"") && text.contains("\"sku\":\"Premium_LRS\""),
        "{text}"
    );
    let back: lifeboat_azure_arm::VmSpec = serde_json::from_str(&text).unwrap();
    assert_eq!(back, spec);
}

fn err(spec: &lifeboat_azure_arm::VmSpec) -> String {
    let e = deployment(spec, None).unwrap_err();
    assert_eq!(
        validate(spec, None).unwrap_err(),
        e,
        "validate and deployment agree"
    );
    e.to_string()
}

#[test]
fn rejects_bad_names() {
    let mut s = bios_one_disk();
    s.name = String::new();
    assert_eq!(err(&s), "invalid VM name \"\": is empty");

    let mut s = bios_one_disk();
    s.name = "web_01".into();
    assert!(
        err(&s).contains("invalid VM name \"web_01\": contains '_'"),
        "{}",
        err(&s)
    );

    let mut s = bios_one_disk();
    s.disks[0].name = "os disk".into();
    assert!(
        err(&s).starts_with("invalid disk name \"os disk\": contains ' '"),
        "{}",
        err(&s)
    );

    let mut s = bios_one_disk();
    s.nics[0].name = "nic#0".into();
    assert!(
        err(&s).starts_with("invalid NIC name \"nic#0\": contains '#'"),
        "{}",
        err(&s)
    );

    let mut s = bios_one_disk();
    s.nics[0].name = String::new();
    assert_eq!(err(&s), "invalid NIC name \"\": is empty");

    let (spec, mut net) = test_failover();
    net.name = "test vnet".into();
    let e = deployment(&spec, Some(&net)).unwrap_err().to_string();
    assert!(
        e.starts_with("invalid virtual network name \"test vnet\""),
        "{e}"
    );
}

#[test]
fn rejects_duplicates() {
    let mut s = uefi_three_disks();
    s.disks[2].name = "DB01-data0".into();
    assert_eq!(
        err(&s),
        "duplicate disk name \"DB01-data0\" (Azure names are case-insensitive)"
    );
    let mut s = uefi_three_disks();
    s.nics[1].name = "db01-nic0".into();
    assert!(matches!(
        deployment(&s, None),
        Err(ArmError::Duplicate { kind: "NIC", .. })
    ));
    let mut s = uefi_three_disks();
    s.nics[1].subnet_id = s.nics[0].subnet_id.clone();
    s.nics[1].private_ip = s.nics[0].private_ip.clone();
    assert!(
        err(&s).contains("10.1.2.10 is already the static IP of another NIC"),
        "{}",
        err(&s)
    );
}

#[test]
fn rejects_os_disk_count() {
    let mut s = uefi_three_disks();
    s.disks[1].os = false;
    assert_eq!(
        err(&s),
        "VM \"db01\" has no OS disk: exactly one disk must have os = true"
    );
    let mut s = uefi_three_disks();
    s.disks[2].os = true;
    assert_eq!(
        err(&s),
        "VM \"db01\" has two OS disks, \"db01-os\" and \"db01-logs\": exactly one disk must have os = true"
    );
    let mut s = bios_one_disk();
    s.disks.clear();
    assert!(matches!(
        deployment(&s, None),
        Err(ArmError::NoOsDisk { .. })
    ));
}

#[test]
fn rejects_sizes_that_are_not_whole_mib() {
    let mut s = bios_one_disk();
    s.disks[0].size_bytes = 32 * GIB + 512;
    let e = err(&s);
    assert!(
        e.starts_with("disk \"web01-os\": size 34359738880 bytes is not a multiple of 1 MiB"),
        "{e}"
    );
    s.disks[0].size_bytes = 0;
    assert_eq!(err(&s), "disk \"web01-os\": size 0 bytes is zero");
}

#[test]
fn rejects_bad_network_input() {
    let mut s = bios_one_disk();
    s.nics.clear();
    assert_eq!(err(&s), "invalid nics: VM \"web01\" needs at least one NIC");

    let mut s = bios_one_disk();
    s.nics[0].private_ip = Some("10.1.2.300".into());
    assert_eq!(
        err(&s),
        "invalid nics[0].private_ip: \"10.1.2.300\" is not an IPv4 address"
    );

    let mut s = bios_one_disk();
    s.nics[0].subnet_id = format!("{RG}/providers/Microsoft.Network/virtualNetworks/prod-vnet");
    assert!(
        err(&s).starts_with("invalid nics[0].subnet_id:"),
        "{}",
        err(&s)
    );

    let mut s = bios_one_disk();
    s.nics[0].mac = Some("00:50:56".into());
    assert!(err(&s).starts_with("invalid nics[0].mac:"), "{}", err(&s));

    let (spec, mut net) = test_failover();
    net.subnet_prefix = "10.98.1.0/24".into();
    let e = deployment(&spec, Some(&net)).unwrap_err().to_string();
    assert_eq!(
        e,
        "invalid test_network.subnet_prefix: 10.98.1.0/24 is not inside 10.99.0.0/16"
    );
}

#[test]
fn rejects_bad_storage_references() {
    let mut s = bios_one_disk();
    s.disks[0].blob_uri = "https://elsewhere.blob.core.windows.net/c/web01-os.vhd".into();
    assert!(
        err(&s).contains("is in storage account \"elsewhere\", not in \"lbcache01\""),
        "{}",
        err(&s)
    );

    let mut s = bios_one_disk();
    s.storage_account_id = "lbcache01".into();
    assert!(
        err(&s).starts_with("invalid storage_account_id:"),
        "{}",
        err(&s)
    );
}

#[test]
fn rejects_impossible_sizes() {
    let mut s = bios_one_disk();
    s.cpus = 200;
    assert!(matches!(
        deployment(&s, None),
        Err(ArmError::NoSize { cpus: 200, .. })
    ));

    let mut s = uefi_three_disks();
    s.size = Some("Standard_B1s".into());
    s.disks
        .push(disk("db01-more", GIB, false, DiskSku::StandardLrs));
    assert_eq!(
        err(&s),
        "VM size Standard_B1s allows at most 2 data disks, the VM has 3"
    );

    let mut s = bios_one_disk();
    s.size = Some("D2s_v5".into());
    assert!(err(&s).starts_with("invalid size:"), "{}", err(&s));

    let mut s = bios_one_disk();
    s.cpus = 0;
    assert_eq!(err(&s), "invalid cpus: must be at least 1");

    // A size the table does not know is taken as given.
    let mut s = bios_one_disk();
    s.size = Some("Standard_F2s_v2".into());
    s.firmware = Firmware::Uefi;
    let doc = deployment(&s, None).unwrap();
    assert_eq!(
        vm(&doc)["properties"]["hardwareProfile"]["vmSize"],
        "Standard_F2s_v2"
    );
}

#[test]
fn rejects_bad_tags_and_location() {
    let mut s = bios_one_disk();
    s.tags.insert("cost/center".into(), "x".into());
    assert!(err(&s).contains("tag name contains '/'"), "{}", err(&s));

    let mut s = bios_one_disk();
    s.location = " ".into();
    assert_eq!(err(&s), "invalid location: is empty");
}
