#!/usr/bin/env python3
"""Check Azure Resource Manager bodies against Microsoft's own SDK models.

Usage: arm_check.py FILE.json...

Each FILE is one of
  * an ARM deployment body  {"properties": {"mode": ..., "template": {...}}},
  * a bare template          {"$schema": ..., "resources": [...]},
  * a single resource        {"type": "Microsoft.Compute/disks", ...}.

It is an *independent oracle* for lifeboat-azure-arm: it knows nothing of
the Rust code. The models come from azure-mgmt-compute==33.0.0,
azure-mgmt-network==28.0.0 and azure-mgmt-resource==23.2.0 (installed by
tests/oracle/setup.sh), the last releases whose models are strict AutoRest
classes. For every resource it:

  1. strips the template-only keys (apiVersion, type, dependsOn, condition,
     copy, comments) and deserializes the rest with the model of its `type`,
     serializes it back (keep_readonly=True) and reports every key that did
     not survive (a key the API does not define: a typo, a wrong nesting)
     and every value the model changed (a wrong JSON type, e.g. "true");
  2. walks the model and reports every required field that is missing
     (Model._validation) and every read-only field that was set;
  3. checks the enum-like fields that matter (they are plain strings in the
     models) against the SDK's enums: disk createOption, hyperVGeneration,
     osType, disk SKU, VM vmSize (VirtualMachineSizeTypes plus a documented
     list of newer sizes), IP allocation method, deployment mode;
  4. checks a few rules the models cannot express (Import needs sourceUri
     and storageAccountId, Attach needs managedDisk.id, Static needs
     privateIPAddress), that apiVersion is the version the model describes,
     and that template references (dependsOn, resourceId(...) expressions)
     point at resources the template declares.

Unknown resource types are errors. One line per problem, naming the file and
the resource, with the JSON path of the offending key. Exit status 0 when
every file passes, 1 when any problem was found, 2 on usage errors.
"""

import json
import re
import sys

try:
    import azure.mgmt.compute.v2024_03_02.models as disk_models
    import azure.mgmt.compute.v2024_07_01.models as vm_models
    import azure.mgmt.network.models as net_models
    import azure.mgmt.resource.resources.v2022_09_01.models as res_models
except ImportError as err:  # pragma: no cover - environment problem
    sys.stderr.write(
        f"arm_check: cannot import the Azure SDK models ({err}); "
        "run tests/oracle/setup.sh and use target/tools/arm-oracle/bin/python\n"
    )
    sys.exit(2)

# Keys that belong to the template language, not to the resource body.
TEMPLATE_ONLY_KEYS = ("apiVersion", "type", "dependsOn", "condition", "copy", "comments")

# Top-level keys of a deployment template (deploymentTemplate.json schema).
TEMPLATE_KEYS = {
    "$schema", "contentVersion", "apiProfile", "parameters", "variables", "functions",
    "resources", "outputs", "metadata", "languageVersion", "definitions",
}

# type -> (model class, API version that model describes)
RESOURCE_MODELS = {
    "microsoft.compute/virtualmachines": (vm_models.VirtualMachine, "2024-07-01"),
    "microsoft.compute/disks": (disk_models.Disk, "2024-03-02"),
    "microsoft.network/networkinterfaces": (net_models.NetworkInterface, "2024-03-01"),
    "microsoft.network/virtualnetworks": (net_models.VirtualNetwork, "2024-03-01"),
    "microsoft.network/networksecuritygroups": (net_models.NetworkSecurityGroup, "2024-03-01"),
}

# VM sizes newer than the SDK's VirtualMachineSizeTypes enum (which stops at
# the v3/v4 generation). From Microsoft's size pages: "Dv5 and Dsv5-series"
# and "Ev5 and Esv5-series" (Azure Virtual Machines documentation).
DOCUMENTED_NEWER_SIZES = {
    "Standard_D2s_v5", "Standard_D4s_v5", "Standard_D8s_v5", "Standard_D16s_v5",
    "Standard_D32s_v5", "Standard_D48s_v5", "Standard_D64s_v5", "Standard_D96s_v5",
    "Standard_E2s_v5", "Standard_E4s_v5", "Standard_E8s_v5", "Standard_E16s_v5",
    "Standard_E20s_v5", "Standard_E32s_v5", "Standard_E48s_v5", "Standard_E64s_v5",
    "Standard_E96s_v5",
}


def _values(enum):
    return {member.value for member in enum}


# (model class name, attribute) -> allowed values. Model class names are
# unique enough here: they are looked up on the classes actually reached.
ENUM_FIELDS = {
    ("CreationData", "create_option"): _values(disk_models.DiskCreateOption),
    ("Disk", "hyper_v_generation"): _values(disk_models.HyperVGeneration),
    ("Disk", "os_type"): _values(disk_models.OperatingSystemTypes),
    ("DiskSku", "name"): _values(disk_models.DiskStorageAccountTypes),
    ("HardwareProfile", "vm_size"): _values(vm_models.VirtualMachineSizeTypes) | DOCUMENTED_NEWER_SIZES,
    ("OSDisk", "create_option"): _values(vm_models.DiskCreateOptionTypes),
    ("OSDisk", "os_type"): _values(vm_models.OperatingSystemTypes),
    ("DataDisk", "create_option"): _values(vm_models.DiskCreateOptionTypes),
    ("ManagedDiskParameters", "storage_account_type"): _values(vm_models.StorageAccountTypes),
    ("SecurityProfile", "security_type"): _values(vm_models.SecurityTypes),
    ("NetworkInterfaceIPConfiguration", "private_ip_allocation_method"): _values(net_models.IPAllocationMethod),
    ("NetworkInterfaceIPConfiguration", "private_ip_address_version"): _values(net_models.IPVersion),
    ("DeploymentProperties", "mode"): _values(res_models.DeploymentMode),
}

RESOURCE_ID_EXPR = re.compile(r"^\[resourceId\((.*)\)\]$")
QUOTED = re.compile(r"'((?:[^']|'')*)'")


class Report:
    def __init__(self):
        self.lines = []

    def add(self, where, kind, path, detail):
        self.lines.append(f"{where}: {kind} {path}: {detail}")


def split_key(key):
    """An AutoRest attribute key ('properties.hardwareProfile'), split on
    unescaped dots."""
    return [part.replace("\\.", ".") for part in re.split(r"(?<!\\)\.", key)]


def same_value(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def compare(before, after, path, where, report):
    """Report every key of `before` that `after` lost, and changed leaves."""
    if isinstance(before, dict):
        if not isinstance(after, dict):
            report.add(where, "changed", path, f"object became {json.dumps(after)}")
            return
        for key, value in before.items():
            sub = f"{path}.{key}"
            if key not in after:
                report.add(where, "unknown key", sub, "dropped by the model: the API defines no such property here")
            else:
                compare(value, after[key], sub, where, report)
    elif isinstance(before, list):
        if not isinstance(after, list) or len(after) != len(before):
            report.add(where, "changed", path, "list not kept as is by the model")
            return
        for i, (b, a) in enumerate(zip(before, after)):
            compare(b, a, f"{path}[{i}]", where, report)
    elif not same_value(before, after):
        report.add(where, "wrong type", path, f"{json.dumps(before)} came back as {json.dumps(after)}")


def is_model(obj):
    return hasattr(type(obj), "_attribute_map") and hasattr(type(obj), "_validation")


def walk(obj, path, where, report, top):
    """Required, read-only and enum checks over a deserialized model."""
    cls = type(obj)
    for attr, meta in cls._attribute_map.items():
        rules = cls._validation.get(attr, {})
        value = getattr(obj, attr, None)
        sub = path + "".join(f".{k}" for k in split_key(meta["key"]))
        if rules.get("required") and value is None:
            report.add(where, "missing required", sub, f"{cls.__name__}.{attr} is required")
        if rules.get("readonly") and value is not None and not (top and attr == "name"):
            report.add(where, "read-only", sub, f"{cls.__name__}.{attr} is read-only: the API ignores or rejects it")
        allowed = ENUM_FIELDS.get((cls.__name__, attr))
        if allowed is not None and value is not None:
            text = value.value if hasattr(value, "value") else value
            if text not in allowed:
                known = sorted(allowed)
                shown = ", ".join(known) if len(known) <= 12 else ", ".join(known[:6]) + f", … ({len(known)} known)"
                report.add(where, "bad value", sub, f"{json.dumps(text)} is not a known {cls.__name__}.{attr}: {shown}")
        if is_model(value):
            walk(value, sub, where, report, False)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if is_model(item):
                    walk(item, f"{sub}[{i}]", where, report, False)
        elif isinstance(value, dict):
            for k, item in value.items():
                if is_model(item):
                    walk(item, f"{sub}.{k}", where, report, False)
    semantic_rules(obj, path, where, report)


def semantic_rules(obj, path, where, report):
    """Rules the service enforces that the models cannot express."""
    name = type(obj).__name__
    if name == "CreationData" and obj.create_option == "Import":
        for attr, key in (("source_uri", "sourceUri"), ("storage_account_id", "storageAccountId")):
            if not getattr(obj, attr):
                report.add(where, "missing required", f"{path}.{key}", f"createOption Import needs {key}")
    if name in ("OSDisk", "DataDisk") and obj.create_option == "Attach":
        if not (obj.managed_disk and obj.managed_disk.id) and not getattr(obj, "vhd", None):
            report.add(where, "missing required", f"{path}.managedDisk.id", "createOption Attach needs managedDisk.id")
    if name == "NetworkInterfaceIPConfiguration" and obj.private_ip_allocation_method == "Static":
        if not obj.private_ip_address:
            report.add(where, "missing required", f"{path}.properties.privateIPAddress",
                       "privateIPAllocationMethod Static needs privateIPAddress")


def resource_ref(expr):
    """('microsoft.compute/disks', ('name',)) for "[resourceId('T', 'N')]"."""
    if not isinstance(expr, str):
        return None
    m = RESOURCE_ID_EXPR.match(expr.strip())
    if not m:
        return None
    args = [a.replace("''", "'") for a in QUOTED.findall(m.group(1))]
    if len(args) < 2:
        return None
    return args[0].lower(), tuple(a.lower() for a in args[1:])


def string_leaves(value, path):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from string_leaves(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from string_leaves(v, f"{path}[{i}]")
    elif isinstance(value, str):
        yield path, value


def check_resource(resource, path, label, report, declared=None):
    if not isinstance(resource, dict):
        report.add(label, "not a resource", path, "expected a JSON object")
        return
    rtype = resource.get("type")
    name = resource.get("name")
    where = f"{label}: {rtype} '{name}' at {path}"
    if not isinstance(rtype, str):
        report.add(where, "missing required", f"{path}.type", "a resource needs its type")
        return
    entry = RESOURCE_MODELS.get(rtype.lower())
    if entry is None:
        report.add(where, "unknown type", f"{path}.type", f"{rtype} has no model in this oracle "
                   f"(known: {', '.join(sorted(RESOURCE_MODELS))})")
        return
    model, api_version = entry
    if not isinstance(name, str) or not name:
        report.add(where, "missing required", f"{path}.name", "a template resource needs a name")
    if declared is not None:
        if resource.get("apiVersion") is None:
            report.add(where, "missing required", f"{path}.apiVersion", "a template resource needs an apiVersion")
        elif resource.get("apiVersion") != api_version:
            report.add(where, "api version", f"{path}.apiVersion",
                       f"{resource.get('apiVersion')} is not {api_version}, the version of the {model.__name__} model checked")
    body = {k: v for k, v in resource.items() if k not in TEMPLATE_ONLY_KEYS}
    try:
        obj = model.deserialize(body)
    except Exception as err:  # DeserializationError and friends
        before = len(report.lines)
        locate_type_errors(model, body, path, where, report)
        if len(report.lines) == before:
            report.add(where, "wrong type", path, f"{model.__name__} cannot read it: {err}")
        obj = None
    if obj is not None:
        compare(body, obj.serialize(keep_readonly=True), path, where, report)
        walk(obj, path, where, report, True)
    if declared is not None:
        check_references(resource, path, where, report, declared)


PRIMITIVES = {
    "str": (str,),
    "int": (int,),
    "long": (int,),
    "float": (int, float),
    "bool": (bool,),
}


def locate_type_errors(cls, raw, path, where, report):
    """Find where a body the model cannot deserialize has a JSON value of
    the wrong type (the SDK's own error names no path)."""
    models = sys.modules[cls.__module__]

    def check(type_name, value, sub):
        if value is None:
            return
        if type_name.startswith("[") and type_name.endswith("]"):
            if not isinstance(value, list):
                report.add(where, "wrong type", sub, f"expected a list, got {json.dumps(value)}")
                return
            for i, item in enumerate(value):
                check(type_name[1:-1], item, f"{sub}[{i}]")
        elif type_name.startswith("{") and type_name.endswith("}"):
            if not isinstance(value, dict):
                report.add(where, "wrong type", sub, f"expected an object, got {json.dumps(value)}")
                return
            for k, item in value.items():
                check(type_name[1:-1], item, f"{sub}.{k}")
        elif type_name in PRIMITIVES:
            ok = isinstance(value, PRIMITIVES[type_name])
            if type_name != "bool" and isinstance(value, bool):
                ok = False
            if not ok:
                report.add(where, "wrong type", sub, f"expected {type_name}, got {json.dumps(value)}")
        else:
            sub_cls = getattr(models, type_name, None)
            if sub_cls is not None and hasattr(sub_cls, "_attribute_map"):
                if not isinstance(value, dict):
                    report.add(where, "wrong type", sub, f"expected a {type_name} object, got {json.dumps(value)}")
                    return
                walk_raw(sub_cls, value, sub)

    def walk_raw(model_cls, obj, sub):
        for meta in model_cls._attribute_map.values():
            keys = split_key(meta["key"])
            value = obj
            for k in keys:
                value = value.get(k) if isinstance(value, dict) else None
            check(meta["type"], value, sub + "".join(f".{k}" for k in keys))

    if isinstance(raw, dict):
        walk_raw(cls, raw, path)


def check_references(resource, path, where, report, declared):
    """dependsOn and resourceId(...) references must name declared resources,
    and a property that references a declared resource needs a dependsOn."""
    depends = resource.get("dependsOn", [])
    if not isinstance(depends, list):
        report.add(where, "bad value", f"{path}.dependsOn", "dependsOn must be a list")
        depends = []
    depended = set()
    for i, dep in enumerate(depends):
        ref = resource_ref(dep)
        if ref is None or ref not in declared["top"]:
            report.add(where, "dangling reference", f"{path}.dependsOn[{i}]",
                       f"{json.dumps(dep)} names no resource declared in the template")
        else:
            depended.add(ref)
    own = ((resource.get("type") or "").lower(), ((resource.get("name") or "").lower(),))
    for leaf_path, text in string_leaves(resource.get("properties", {}), f"{path}.properties"):
        ref = resource_ref(text)
        if ref is None:
            continue
        rtype, names = ref
        if ref in declared["top"]:
            if ref not in depended and ref != own:
                report.add(where, "missing dependsOn", leaf_path, f"references {text} but does not depend on it")
        elif ref in declared["children"]:
            parent = declared["children"][ref]
            if parent not in depended:
                report.add(where, "missing dependsOn", leaf_path,
                           f"references {text}; its parent {parent[0]} '{parent[1][0]}' is not in dependsOn")
        elif rtype in RESOURCE_MODELS or rtype == "microsoft.network/virtualnetworks/subnets":
            report.add(where, "dangling reference", leaf_path, f"{text} names no resource declared in the template")


def declared_resources(resources):
    top, children = set(), {}
    for r in resources:
        if not isinstance(r, dict) or not isinstance(r.get("type"), str) or not isinstance(r.get("name"), str):
            continue
        key = (r["type"].lower(), (r["name"].lower(),))
        top.add(key)
        if key[0] == "microsoft.network/virtualnetworks":
            for s in (r.get("properties") or {}).get("subnets") or []:
                if isinstance(s, dict) and isinstance(s.get("name"), str):
                    children[("microsoft.network/virtualnetworks/subnets", (key[1][0], s["name"].lower()))] = key
    return {"top": top, "children": children}


def check_template(template, path, label, report):
    where = f"{label}: template at {path}"
    if not isinstance(template, dict):
        report.add(where, "wrong type", path, "a template is a JSON object")
        return 0
    for key in template:
        if key not in TEMPLATE_KEYS:
            report.add(where, "unknown key", f"{path}.{key}", "not a deployment template property")
    for key in ("$schema", "contentVersion", "resources"):
        if key not in template:
            report.add(where, "missing required", f"{path}.{key}", "a deployment template needs it")
    resources = template.get("resources", [])
    if not isinstance(resources, list):
        report.add(where, "wrong type", f"{path}.resources", "resources must be a list")
        return 0
    declared = declared_resources(resources)
    seen = set()
    for i, resource in enumerate(resources):
        if isinstance(resource, dict) and isinstance(resource.get("type"), str) and isinstance(resource.get("name"), str):
            key = (resource["type"].lower(), resource["name"].lower())
            if key in seen:
                report.add(where, "duplicate", f"{path}.resources[{i}]", f"{resource['type']} '{resource['name']}' declared twice")
            seen.add(key)
        check_resource(resource, f"{path}.resources[{i}]", label, report, declared)
    return len(resources)


def check_deployment(doc, label, report):
    where = f"{label}: deployment at $"
    try:
        obj = res_models.Deployment.deserialize(doc)
    except Exception as err:
        report.add(where, "wrong type", "$", f"Deployment cannot read it: {err}")
        return 0
    compare(doc, obj.serialize(keep_readonly=True), "$", where, report)
    walk(obj, "$", where, report, True)
    props = doc.get("properties")
    if isinstance(props, dict) and "template" in props:
        return check_template(props["template"], "$.properties.template", label, report)
    report.add(where, "missing required", "$.properties.template", "this oracle checks inline templates only")
    return 0


def check_file(filename, report):
    try:
        with open(filename, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as err:
        report.add(filename, "unreadable", "$", str(err))
        return 0
    if isinstance(doc, dict) and "type" in doc and "template" not in (doc.get("properties") or {}):
        check_resource(doc, "$", filename, report)
        return 1
    if isinstance(doc, dict) and "resources" in doc and "properties" not in doc:
        return check_template(doc, "$", filename, report)
    if isinstance(doc, dict) and "properties" in doc:
        return check_deployment(doc, filename, report)
    report.add(filename, "unknown document", "$", "neither a deployment, a template nor a resource (no 'type')")
    return 0


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        sys.stderr.write(__doc__)
        return 2
    report = Report()
    resources = 0
    for filename in argv[1:]:
        resources += check_file(filename, report)
    for line in report.lines:
        print(line)
    files = len(argv) - 1
    print(f"arm_check: {files} file(s), {resources} resource(s), {len(report.lines)} problem(s)")
    return 1 if report.lines else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
