//! Task waiting and login error hygiene, through a scripted transport that
//! answers with canned SOAP bodies in order (these paths are hard to reach
//! through vcsim).

use std::collections::VecDeque;

use lifeboat_vmware_api::{Client, MoRef, Response, Transport, VmwareError};

const ENV_START: &str = r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>"#;
const ENV_END: &str = "</soapenv:Body></soapenv:Envelope>";

const SERVICE_CONTENT: &str = r#"<RetrieveServiceContentResponse xmlns="urn:vim25"><returnval><rootFolder type="Folder">group-d1</rootFolder><propertyCollector type="PropertyCollector">propertyCollector</propertyCollector><viewManager type="ViewManager">ViewManager</viewManager><about><fullName>VMware vCenter Server 7.0.3</fullName><apiType>VirtualCenter</apiType><apiVersion>7.0.3.0</apiVersion></about><sessionManager type="SessionManager">SessionManager</sessionManager></returnval></RetrieveServiceContentResponse>"#;

fn task_state(state: &str, extra: &str) -> String {
    format!(
        r#"<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="Task">task-7</obj><propSet><name>info</name><val xsi:type="TaskInfo"><key>task-7</key><name>ReconfigVM_Task</name><state>{state}</state>{extra}</val></propSet></objects></returnval></RetrievePropertiesExResponse>"#
    )
}

/// Answers each request with the next `(status, inner body)`; counts pauses.
struct Script {
    answers: VecDeque<Result<(u16, String), String>>,
    requests: Vec<(Vec<(String, String)>, String)>,
    pauses: Vec<u32>,
}

impl Script {
    fn new(answers: Vec<Result<(u16, String), String>>) -> Self {
        Script {
            answers: answers.into(),
            requests: Vec::new(),
            pauses: Vec::new(),
        }
    }
}

impl Transport for Script {
    fn post(
        &mut self,
        _url: &str,
        headers: &[(String, String)],
        body: &str,
    ) -> Result<Response, String> {
        self.requests.push((headers.to_vec(), body.to_owned()));
        let (status, inner) = self.answers.pop_front().ok_or("script exhausted")??;
        let mut headers = vec![("Content-Type".to_owned(), "text/xml".to_owned())];
        if inner.starts_with("<LoginResponse") {
            headers.push((
                "Set-Cookie".to_owned(),
                r#"vmware_soap_session="5226c1e0"; Path=/; HttpOnly; Secure;"#.to_owned(),
            ));
        }
        Ok(Response {
            status,
            headers,
            body: format!("{ENV_START}{inner}{ENV_END}"),
        })
    }

    fn pause(&mut self, attempt: u32) {
        self.pauses.push(attempt);
    }
}

fn ok(inner: &str) -> Result<(u16, String), String> {
    Ok((200, inner.to_owned()))
}

#[test]
fn failed_task_names_its_fault() {
    // The service content (for the property collector) is read lazily,
    // after the task was started.
    let script = Script::new(vec![
        ok(
            r#"<ReconfigVM_TaskResponse xmlns="urn:vim25"><returnval type="Task">task-7</returnval></ReconfigVM_TaskResponse>"#,
        ),
        ok(SERVICE_CONTENT),
        ok(&task_state("queued", "")),
        ok(&task_state("running", "<progress>40</progress>")),
        ok(&task_state(
            "error",
            r#"<error><fault xsi:type="InvalidPowerState"><existingState>poweredOff</existingState></fault><localizedMessage>The attempted operation cannot be performed in the current state (Powered off).</localizedMessage></error>"#,
        )),
    ]);
    let mut vc = Client::new(script, "https://vc/sdk");
    let err = vc
        .enable_change_tracking(&MoRef::new("VirtualMachine", "vm-1"))
        .unwrap_err();
    match &err {
        VmwareError::TaskFailed {
            task,
            name,
            fault_type,
            message,
        } => {
            assert_eq!(task, "task-7");
            assert_eq!(name, "ReconfigVM_Task");
            assert_eq!(fault_type, "InvalidPowerState");
            assert!(message.contains("Powered off"), "{message}");
        }
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    assert!(err.to_string().contains("InvalidPowerState"));
    assert_eq!(vc.transport().pauses, vec![0, 1]);
}

#[test]
fn task_polling_is_bounded() {
    let mut answers = vec![
        ok(
            r#"<CreateSnapshot_TaskResponse xmlns="urn:vim25"><returnval type="Task">task-7</returnval></CreateSnapshot_TaskResponse>"#,
        ),
        ok(SERVICE_CONTENT),
    ];
    answers.extend((0..10).map(|_| ok(&task_state("running", ""))));
    let mut vc = Client::new(Script::new(answers), "https://vc/sdk").with_max_task_polls(3);
    let err = vc
        .create_snapshot(&MoRef::new("VirtualMachine", "vm-1"), "s", false)
        .unwrap_err();
    assert_eq!(
        err,
        VmwareError::TaskTimeout {
            task: "task-7".into(),
            state: "running".into(),
            polls: 3
        }
    );
    assert_eq!(vc.transport().requests.len(), 2 + 3);
}

#[test]
fn session_cookie_is_kept_and_sent_back() {
    let script = Script::new(vec![
        ok(SERVICE_CONTENT),
        ok(
            r#"<LoginResponse xmlns="urn:vim25"><returnval><key>5226c1e0</key><userName>VSPHERE.LOCAL\admin</userName></returnval></LoginResponse>"#,
        ),
        ok(r#"<LogoutResponse xmlns="urn:vim25"></LogoutResponse>"#),
    ]);
    let mut vc = Client::new(script, "https://vc/sdk");
    let session = vc.login("admin@vsphere.local", "pw").unwrap();
    assert_eq!(session.user_name, r"VSPHERE.LOCAL\admin");
    assert_eq!(vc.session_cookie(), Some(r#""5226c1e0""#));
    vc.logout().unwrap();
    let (headers, body) = &vc.transport().requests[2];
    assert!(body.contains("<Logout xmlns=\"urn:vim25\">"));
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "Cookie" && v == r#"vmware_soap_session="5226c1e0""#),
        "{headers:?}"
    );
    // The login request escaped nothing it did not have to, and had no cookie.
    let (login_headers, login_body) = &vc.transport().requests[1];
    assert!(login_body.contains("<userName>admin@vsphere.local</userName>"));
    assert!(!login_headers.iter().any(|(n, _)| n == "Cookie"));
}

#[test]
fn login_errors_never_show_the_password() {
    let password = "p&ss<word>";
    // A transport whose error quotes the request (as some HTTP stacks do).
    let script = Script::new(vec![
        ok(SERVICE_CONTENT),
        Err("connection reset while sending <password>p&amp;ss&lt;word&gt;</password>".into()),
    ]);
    let mut vc = Client::new(script, "https://vc/sdk");
    let err = vc.login("admin", password).unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(matches!(err, VmwareError::Transport { .. }), "{err:?}");
    assert!(
        !shown.contains(password) && !shown.contains("p&amp;ss&lt;word&gt;"),
        "{shown}"
    );

    // A fault whose message quotes the password.
    let script = Script::new(vec![
        ok(SERVICE_CONTENT),
        Ok((
            500,
            r#"<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>Cannot complete login due to an incorrect user name or password (p&amp;ss&lt;word&gt;).</faultstring><detail><InvalidLoginFault xmlns="urn:vim25" xsi:type="InvalidLogin"></InvalidLoginFault></detail></soapenv:Fault>"#
                .to_owned(),
        )),
    ]);
    let mut vc = Client::new(script, "https://vc/sdk");
    let err = vc.login("admin", password).unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(matches!(err, VmwareError::Login { .. }), "{err:?}");
    assert!(!shown.contains(password), "{shown}");
    assert!(shown.contains("incorrect user name or password"), "{shown}");
}
