//! The vSphere SOAP client.

use roxmltree::Node;

use crate::error::VmwareError;
use crate::parse;
use crate::transport::{Response, Transport};
use crate::types::{ChangedAreas, MoRef, ServiceContent, UserSession, VmInventory};
use crate::xml::{element, envelope, escape, moref_element, read_answer};

/// The `SOAPAction` header sent by default: the vim25 namespace and the API
/// version whose requests the client writes (vCenter 6.5 and later accept it).
pub const DEFAULT_SOAP_ACTION: &str = "urn:vim25/6.5";

/// How many times [`Client::wait_for_task`] reads a task's state by default
/// before giving up.
pub const DEFAULT_MAX_TASK_POLLS: u32 = 600;

/// The cookie vCenter's `/sdk` endpoint keeps the session in.
pub const SESSION_COOKIE: &str = "vmware_soap_session";

/// How many pages of a property collector answer are read at most.
const MAX_PROPERTY_PAGES: usize = 10_000;

/// What replaces a password that would otherwise appear in an error.
const MASK: &str = "********";

/// A client of one vCenter's SOAP endpoint (`http(s)://host:port/sdk`).
///
/// It keeps the session cookie of [`Client::login`] and sends it back with
/// every later request; the `ServiceContent` is fetched once and kept.
#[derive(Debug)]
pub struct Client<T: Transport> {
    transport: T,
    url: String,
    soap_action: String,
    cookie: Option<String>,
    content: Option<ServiceContent>,
    max_task_polls: u32,
}

impl<T: Transport> Client<T> {
    /// A client of the endpoint `url` (e.g. `https://vc.example.com/sdk`)
    /// that sends its requests through `transport`.
    pub fn new(transport: T, url: impl Into<String>) -> Self {
        Client {
            transport,
            url: url.into(),
            soap_action: DEFAULT_SOAP_ACTION.to_owned(),
            cookie: None,
            content: None,
            max_task_polls: DEFAULT_MAX_TASK_POLLS,
        }
    }

    /// Sends this `SOAPAction` header instead of [`DEFAULT_SOAP_ACTION`].
    pub fn with_soap_action(mut self, action: impl Into<String>) -> Self {
        self.soap_action = action.into();
        self
    }

    /// Polls a task at most `polls` times (at least once) before
    /// [`VmwareError::TaskTimeout`]; [`Transport::pause`] runs between polls.
    pub fn with_max_task_polls(mut self, polls: u32) -> Self {
        self.max_task_polls = polls.max(1);
        self
    }

    /// Reuses a session cookie value obtained earlier.
    pub fn with_session_cookie(mut self, cookie: impl Into<String>) -> Self {
        self.cookie = Some(cookie.into());
        self
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The value of the `vmware_soap_session` cookie, once vCenter set one.
    pub fn session_cookie(&self) -> Option<&str> {
        self.cookie.as_deref()
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport, mutably.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Gives the transport back.
    pub fn into_transport(self) -> T {
        self.transport
    }

    /// Calls `method` on `this` with the (escaped) parameter elements
    /// `params`, and reads the `<{method}Response>` element with `read`.
    fn call<R>(
        &mut self,
        method: &str,
        this: &MoRef,
        params: &str,
        read: impl FnOnce(Node<'_, '_>) -> Result<R, VmwareError>,
    ) -> Result<R, VmwareError> {
        let response = self.post(method, this, params)?;
        read_answer(method, response.status, &response.body, read)
    }

    /// Sends one request and keeps any session cookie of the answer.
    fn post(&mut self, method: &str, this: &MoRef, params: &str) -> Result<Response, VmwareError> {
        let body = envelope(method, this, params);
        let mut headers = vec![
            (
                "Content-Type".to_owned(),
                "text/xml; charset=utf-8".to_owned(),
            ),
            ("SOAPAction".to_owned(), self.soap_action.clone()),
        ];
        if let Some(cookie) = &self.cookie {
            headers.push(("Cookie".to_owned(), format!("{SESSION_COOKIE}={cookie}")));
        }
        let response = self
            .transport
            .post(&self.url, &headers, &body)
            .map_err(|message| VmwareError::Transport {
                url: self.url.clone(),
                message,
            })?;
        if let Some(cookie) = session_cookie(&response) {
            self.cookie = Some(cookie);
        }
        Ok(response)
    }

    /// Reads the `ServiceContent` (no login needed) and keeps it.
    pub fn retrieve_service_content(&mut self) -> Result<ServiceContent, VmwareError> {
        let this = MoRef::new("ServiceInstance", "ServiceInstance");
        let content = self.call("RetrieveServiceContent", &this, "", parse::service_content)?;
        self.content = Some(content.clone());
        Ok(content)
    }

    /// The kept `ServiceContent`, read first if needed.
    fn content(&mut self) -> Result<ServiceContent, VmwareError> {
        match &self.content {
            Some(c) => Ok(c.clone()),
            None => self.retrieve_service_content(),
        }
    }

    /// Logs in; the session cookie is then sent with every request.
    ///
    /// A refused login is [`VmwareError::Login`]. Neither it nor any other
    /// error of this call contains the password.
    pub fn login(&mut self, user: &str, password: &str) -> Result<UserSession, VmwareError> {
        let content = self.content()?;
        let params = format!(
            "{}{}",
            element("userName", user),
            element("password", password)
        );
        let result = self.call(
            "Login",
            &content.session_manager,
            &params,
            parse::user_session,
        );
        result.map_err(|e| match e {
            VmwareError::Fault {
                fault_type,
                message,
            } => VmwareError::Login {
                user: user.to_owned(),
                fault_type,
                message: mask(&message, password),
            },
            other => mask_error(other, password),
        })
    }

    /// Ends the session.
    pub fn logout(&mut self) -> Result<(), VmwareError> {
        let content = self.content()?;
        self.call("Logout", &content.session_manager, "", |_| Ok(()))?;
        self.cookie = None;
        Ok(())
    }

    /// The virtual machine with this inventory name, wherever it is.
    ///
    /// Uses a container view over all virtual machines and the property
    /// collector; [`VmwareError::NotFound`] when none has the name,
    /// [`VmwareError::Ambiguous`] when several have it.
    pub fn find_vm(&mut self, name: &str) -> Result<MoRef, VmwareError> {
        let content = self.content()?;
        let view_manager = content.view_manager.clone().ok_or_else(|| {
            VmwareError::parse("RetrieveServiceContent", "the server has no view manager")
        })?;
        let params = format!(
            "{}{}{}",
            moref_element("container", &content.root_folder),
            element("type", "VirtualMachine"),
            element("recursive", "true")
        );
        let view = self.call("CreateContainerView", &view_manager, &params, |n| {
            parse::returned_moref("CreateContainerView", n)
        })?;
        let names = self.view_names(&content.property_collector, &view, "VirtualMachine");
        let destroyed = self.call("DestroyView", &view, "", |_| Ok(()));
        let names = names?;
        destroyed?;

        let escaped = escape_inventory_name(name);
        let matches: Vec<MoRef> = names
            .into_iter()
            .filter(|(_, n)| n == name || *n == escaped)
            .map(|(m, _)| m)
            .collect();
        match matches.as_slice() {
            [] => Err(VmwareError::NotFound {
                kind: "virtual machine".to_owned(),
                name: name.to_owned(),
            }),
            [one] => Ok(one.clone()),
            _ => Err(VmwareError::Ambiguous {
                name: name.to_owned(),
                candidates: matches.iter().map(MoRef::to_string).collect(),
            }),
        }
    }

    /// The `name` of every object of type `kind` in a container view,
    /// following the property collector's paging tokens.
    fn view_names(
        &mut self,
        collector: &MoRef,
        view: &MoRef,
        kind: &str,
    ) -> Result<Vec<(MoRef, String)>, VmwareError> {
        let spec = format!(
            concat!(
                "<specSet><propSet><type>{kind}</type><pathSet>name</pathSet></propSet>",
                "<objectSet>{obj}<skip>true</skip>",
                "<selectSet xsi:type=\"TraversalSpec\"><name>view</name>",
                "<type>ContainerView</type><path>view</path><skip>false</skip></selectSet>",
                "</objectSet></specSet><options></options>"
            ),
            kind = escape(kind),
            obj = moref_element("obj", view)
        );
        let (mut all, mut token) = self.call("RetrievePropertiesEx", collector, &spec, |n| {
            parse::object_names("RetrievePropertiesEx", n)
        })?;
        let mut pages = 1;
        while let Some(t) = token {
            if pages >= MAX_PROPERTY_PAGES {
                return Err(VmwareError::parse(
                    "ContinueRetrievePropertiesEx",
                    format!("more than {MAX_PROPERTY_PAGES} pages"),
                ));
            }
            let (more, next) = self.call(
                "ContinueRetrievePropertiesEx",
                collector,
                &element("token", &t),
                |n| parse::object_names("ContinueRetrievePropertiesEx", n),
            )?;
            all.extend(more);
            token = next;
            pages += 1;
        }
        Ok(all)
    }

    /// `RetrievePropertiesEx` of the paths of each type on these objects.
    fn retrieve<R>(
        &mut self,
        prop_sets: &[(&str, &[&str])],
        objects: &[MoRef],
        read: impl FnOnce(Node<'_, '_>) -> Result<R, VmwareError>,
    ) -> Result<R, VmwareError> {
        let collector = self.content()?.property_collector;
        let mut spec = String::from("<specSet>");
        for (kind, paths) in prop_sets {
            spec.push_str("<propSet>");
            spec.push_str(&element("type", kind));
            for path in *paths {
                spec.push_str(&element("pathSet", path));
            }
            spec.push_str("</propSet>");
        }
        for obj in objects {
            spec.push_str("<objectSet>");
            spec.push_str(&moref_element("obj", obj));
            spec.push_str("<skip>false</skip></objectSet>");
        }
        spec.push_str("</specSet><options></options>");
        self.call("RetrievePropertiesEx", &collector, &spec, read)
    }

    /// Name, CPUs, memory, firmware, guest OS, change tracking, disks and
    /// network adapters of a virtual machine, with network names resolved.
    pub fn vm_inventory(&mut self, vm: &MoRef) -> Result<VmInventory, VmwareError> {
        let props = self.retrieve(
            &[("VirtualMachine", parse::VM_PATHS)],
            std::slice::from_ref(vm),
            parse::vm_properties,
        )?;
        let mut inventory = props.inventory;
        let names = if props.networks.is_empty() {
            Vec::new()
        } else {
            let mut kinds: Vec<&str> = props.networks.iter().map(|n| n.kind.as_str()).collect();
            kinds.sort_unstable();
            kinds.dedup();
            let sets: Vec<(&str, &[&str])> = kinds
                .iter()
                .map(|k| (*k, parse::network_paths(k)))
                .collect();
            self.retrieve(&sets, &props.networks, parse::network_names)?
        };
        for (nic, net) in inventory.nics.iter_mut().zip(&props.nic_networks) {
            nic.network = parse::resolve_network(net, &names);
        }
        Ok(inventory)
    }

    /// Turns changed block tracking on (`ReconfigVM_Task` with
    /// `changeTrackingEnabled=true`) and waits for the task. Tracking starts
    /// for real at the VM's next power-on, stun/unstun or snapshot.
    pub fn enable_change_tracking(&mut self, vm: &MoRef) -> Result<(), VmwareError> {
        let params = "<spec><changeTrackingEnabled>true</changeTrackingEnabled></spec>";
        let task = self.call("ReconfigVM_Task", vm, params, |n| {
            parse::returned_moref("ReconfigVM_Task", n)
        })?;
        self.wait_for_task(&task)?;
        Ok(())
    }

    /// Takes a snapshot without memory (`CreateSnapshot_Task`), waits for it,
    /// and returns the snapshot's reference. `quiesce` asks VMware Tools to
    /// quiesce the guest's file systems first.
    pub fn create_snapshot(
        &mut self,
        vm: &MoRef,
        name: &str,
        quiesce: bool,
    ) -> Result<MoRef, VmwareError> {
        let params = format!(
            "{}{}{}",
            element("name", name),
            element("memory", "false"),
            element("quiesce", if quiesce { "true" } else { "false" })
        );
        let task = self.call("CreateSnapshot_Task", vm, &params, |n| {
            parse::returned_moref("CreateSnapshot_Task", n)
        })?;
        self.wait_for_task(&task)?.ok_or_else(|| {
            VmwareError::parse(
                "CreateSnapshot_Task",
                format!("task {} succeeded without a snapshot", task.value),
            )
        })
    }

    /// Removes a snapshot (not its children), consolidating the disks, and
    /// waits for the task.
    pub fn remove_snapshot(&mut self, snapshot: &MoRef) -> Result<(), VmwareError> {
        let params = "<removeChildren>false</removeChildren><consolidate>true</consolidate>";
        let task = self.call("RemoveSnapshot_Task", snapshot, params, |n| {
            parse::returned_moref("RemoveSnapshot_Task", n)
        })?;
        self.wait_for_task(&task)?;
        Ok(())
    }

    /// Polls a task's `info` until it succeeds (returning its result when
    /// that is a managed object reference) or fails
    /// ([`VmwareError::TaskFailed`] naming the fault), at most the configured
    /// number of times ([`VmwareError::TaskTimeout`]).
    pub fn wait_for_task(&mut self, task: &MoRef) -> Result<Option<MoRef>, VmwareError> {
        let mut state = String::from("queued");
        for attempt in 0..self.max_task_polls {
            if attempt > 0 {
                self.transport.pause(attempt - 1);
            }
            let info = self.retrieve(
                &[("Task", &["info"])],
                std::slice::from_ref(task),
                parse::task_info,
            )?;
            match info.state.as_str() {
                "success" => return Ok(info.result),
                "error" => {
                    return Err(VmwareError::TaskFailed {
                        task: task.value.clone(),
                        name: info.name,
                        fault_type: if info.fault_type.is_empty() {
                            "unknown fault".to_owned()
                        } else {
                            info.fault_type
                        },
                        message: info.message,
                    });
                }
                _ => state = info.state,
            }
        }
        Err(VmwareError::TaskTimeout {
            task: task.value.clone(),
            state,
            polls: self.max_task_polls,
        })
    }

    /// One `QueryChangedDiskAreas` call: the areas of disk `device_key` of
    /// `vm`, as of `snapshot`, changed since `change_id` (`*` for all
    /// allocated areas), starting at `start_offset`. vCenter may answer for
    /// less than the rest of the disk; see
    /// [`Client::query_all_changed_disk_areas`].
    pub fn query_changed_disk_areas(
        &mut self,
        vm: &MoRef,
        snapshot: &MoRef,
        device_key: i32,
        start_offset: u64,
        change_id: &str,
    ) -> Result<ChangedAreas, VmwareError> {
        let params = format!(
            "{}{}{}{}",
            moref_element("snapshot", snapshot),
            element("deviceKey", &device_key.to_string()),
            element("startOffset", &start_offset.to_string()),
            element("changeId", change_id)
        );
        self.call("QueryChangedDiskAreas", vm, &params, parse::changed_areas)
    }

    /// All changed areas of a disk of `capacity_bytes` bytes: calls
    /// `QueryChangedDiskAreas` from offset 0, then again from each answer's
    /// `start_offset + length`, until the capacity is covered.
    pub fn query_all_changed_disk_areas(
        &mut self,
        vm: &MoRef,
        snapshot: &MoRef,
        device_key: i32,
        capacity_bytes: u64,
        change_id: &str,
    ) -> Result<Vec<(u64, u64)>, VmwareError> {
        let mut areas = Vec::new();
        let mut offset = 0u64;
        while offset < capacity_bytes {
            let page =
                self.query_changed_disk_areas(vm, snapshot, device_key, offset, change_id)?;
            let next = page.start_offset.checked_add(page.length).ok_or_else(|| {
                VmwareError::parse("QueryChangedDiskAreas", "startOffset + length overflows")
            })?;
            if next <= offset {
                return Err(VmwareError::parse(
                    "QueryChangedDiskAreas",
                    format!(
                        "asked from offset {offset}, the answer covers {}..{next}: no progress",
                        page.start_offset
                    ),
                ));
            }
            areas.extend(page.areas);
            offset = next;
        }
        Ok(areas)
    }
}

/// The `vmware_soap_session` value of an answer's `Set-Cookie` headers.
fn session_cookie(response: &Response) -> Option<String> {
    let prefix = format!("{SESSION_COOKIE}=");
    response
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
        .find_map(|(_, value)| {
            let start = value.find(&prefix)? + prefix.len();
            let rest = &value[start..];
            let end = if let Some(quoted) = rest.strip_prefix('"') {
                quoted.find('"').map_or(rest.len(), |i| i + 2)
            } else {
                rest.find([';', ',']).unwrap_or(rest.len())
            };
            let cookie = rest[..end].trim();
            (!cookie.is_empty()).then(|| cookie.to_owned())
        })
}

/// `text` with `secret` (raw and XML-escaped) masked.
fn mask(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    let escaped = escape(secret);
    text.replace(secret, MASK).replace(&escaped, MASK)
}

/// An error with `secret` masked in its free-text fields.
fn mask_error(error: VmwareError, secret: &str) -> VmwareError {
    match error {
        VmwareError::Transport { url, message } => VmwareError::Transport {
            url,
            message: mask(&message, secret),
        },
        VmwareError::Http {
            method,
            status,
            body,
        } => VmwareError::Http {
            method,
            status,
            body: mask(&body, secret),
        },
        VmwareError::Parse { method, detail } => VmwareError::Parse {
            method,
            detail: mask(&detail, secret),
        },
        other => other,
    }
}

/// A name as the vSphere inventory stores it: `%`, `/` and `\` escaped as
/// `%25`, `%2f` and `%5c`.
pub fn escape_inventory_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2f"),
            '\\' => out.push_str("%5c"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> Response {
        Response {
            status: 200,
            headers: vec![("set-cookie".into(), value.into())],
            body: String::new(),
        }
    }

    #[test]
    fn reads_quoted_and_plain_cookies() {
        assert_eq!(
            session_cookie(&with_cookie(
                r#"vmware_soap_session="52a1b"; Path=/; HttpOnly; Secure;"#
            ))
            .as_deref(),
            Some(r#""52a1b""#)
        );
        assert_eq!(
            session_cookie(&with_cookie("vmware_soap_session=abc-1; HttpOnly")).as_deref(),
            Some("abc-1")
        );
        assert_eq!(session_cookie(&with_cookie("other=1")), None);
    }

    #[test]
    fn masks_secrets() {
        assert_eq!(mask("pw a<b here", "a<b"), "pw ******** here");
        assert_eq!(mask("pw a&lt;b here", "a<b"), "pw ******** here");
        assert_eq!(mask("nothing", ""), "nothing");
    }

    #[test]
    fn escapes_inventory_names() {
        assert_eq!(escape_inventory_name(r"a/b\c%d"), "a%2fb%5cc%25d");
    }

    #[test]
    fn escape_is_used_for_params() {
        assert_eq!(element("name", "a<b"), "<name>a&lt;b</name>");
        assert_eq!(escape("x"), "x");
    }
}
