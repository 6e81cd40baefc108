//! `QueryChangedDiskAreas` against recorded answers (vcsim does not
//! implement it): a fake transport replays the files of
//! `tests/recordings/vmware/`.

use std::path::PathBuf;

use lifeboat_vmware_api::{ChangedAreas, Client, MoRef, Response, Transport, VmwareError};

const CAPACITY: u64 = 17_179_869_184;
const CHANGE_ID: &str = "52 3c 6b 1f 0a 9e 4d 27-8c 11 f2 5a 6e 90 b3 d4/4417";

fn recording(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/recordings/vmware")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read recording {}: {e}", path.display()))
}

/// Answers `QueryChangedDiskAreas` by `startOffset` from recorded files and
/// keeps the requests it saw.
struct Replay {
    /// `(startOffset, file, status)`.
    answers: Vec<(u64, &'static str, u16)>,
    requests: Vec<String>,
}

impl Replay {
    fn new(answers: Vec<(u64, &'static str, u16)>) -> Self {
        Replay {
            answers,
            requests: Vec::new(),
        }
    }
}

impl Transport for Replay {
    fn post(
        &mut self,
        url: &str,
        headers: &[(String, String)],
        body: &str,
    ) -> Result<Response, String> {
        assert_eq!(url, "https://vc.example.test/sdk");
        assert!(
            headers
                .iter()
                .any(|(n, v)| n == "SOAPAction" && v == "urn:vim25/6.5"),
            "{headers:?}"
        );
        self.requests.push(body.to_owned());
        let doc = roxmltree::Document::parse(body).map_err(|e| format!("bad request XML: {e}"))?;
        let offset: u64 = doc
            .descendants()
            .find(|n| n.has_tag_name("startOffset"))
            .and_then(|n| n.text())
            .and_then(|t| t.parse().ok())
            .ok_or("request without startOffset")?;
        let (_, file, status) = self
            .answers
            .iter()
            .find(|(o, _, _)| *o == offset)
            .ok_or_else(|| format!("no recording for startOffset {offset}"))?;
        Ok(Response {
            status: *status,
            headers: vec![("Content-Type".into(), "text/xml; charset=utf-8".into())],
            body: recording(file),
        })
    }
}

fn vm() -> MoRef {
    MoRef::new("VirtualMachine", "vm-1042")
}

fn snapshot() -> MoRef {
    MoRef::new("VirtualMachineSnapshot", "snapshot-1077")
}

fn client(answers: Vec<(u64, &'static str, u16)>) -> Client<Replay> {
    Client::new(Replay::new(answers), "https://vc.example.test/sdk")
}

#[test]
fn parses_one_page() {
    let mut vc = client(vec![(0, "query-changed-disk-areas-page1.xml", 200)]);
    let page = vc
        .query_changed_disk_areas(&vm(), &snapshot(), 2000, 0, CHANGE_ID)
        .unwrap();
    assert_eq!(
        page,
        ChangedAreas {
            start_offset: 0,
            length: 8_589_934_592,
            areas: vec![
                (0, 1_048_576),
                (33_554_432, 65_536),
                (1_073_741_824, 2_097_152),
                (8_589_869_056, 65_536),
            ],
        }
    );
    assert!(page.length < CAPACITY);

    // The request carries every parameter, escaped, in the vim25 order.
    let request = &vc.transport().requests[0];
    let doc = roxmltree::Document::parse(request).unwrap();
    let call = doc
        .descendants()
        .find(|n| n.has_tag_name("QueryChangedDiskAreas"))
        .expect("QueryChangedDiskAreas element");
    let params: Vec<(&str, &str, Option<&str>)> = call
        .children()
        .filter(|c| c.is_element())
        .map(|c| {
            (
                c.tag_name().name(),
                c.text().unwrap_or(""),
                c.attribute("type"),
            )
        })
        .collect();
    assert_eq!(
        params,
        vec![
            ("_this", "vm-1042", Some("VirtualMachine")),
            ("snapshot", "snapshot-1077", Some("VirtualMachineSnapshot")),
            ("deviceKey", "2000", None),
            ("startOffset", "0", None),
            ("changeId", CHANGE_ID, None),
        ]
    );
}

#[test]
fn pages_across_the_whole_disk() {
    let mut vc = client(vec![
        (0, "query-changed-disk-areas-page1.xml", 200),
        (8_589_934_592, "query-changed-disk-areas-page2.xml", 200),
    ]);
    let areas = vc
        .query_all_changed_disk_areas(&vm(), &snapshot(), 2000, CAPACITY, CHANGE_ID)
        .unwrap();
    assert_eq!(
        areas,
        vec![
            (0, 1_048_576),
            (33_554_432, 65_536),
            (1_073_741_824, 2_097_152),
            (8_589_869_056, 65_536),
            (8_589_934_592, 131_072),
            (17_179_803_648, 65_536),
        ]
    );
    assert_eq!(vc.transport().requests.len(), 2, "exactly two pages");
}

#[test]
fn empty_answer_has_no_areas() {
    let mut vc = client(vec![(0, "query-changed-disk-areas-empty.xml", 200)]);
    let page = vc
        .query_changed_disk_areas(&vm(), &snapshot(), 2000, 0, CHANGE_ID)
        .unwrap();
    assert_eq!(page.start_offset, 0);
    assert_eq!(page.length, CAPACITY);
    assert!(page.areas.is_empty());

    let all = vc
        .query_all_changed_disk_areas(&vm(), &snapshot(), 2000, CAPACITY, CHANGE_ID)
        .unwrap();
    assert!(all.is_empty());
    assert_eq!(vc.transport().requests.len(), 2, "one call each, no paging");
}

#[test]
fn invalid_change_id_is_a_file_fault() {
    let mut vc = client(vec![(0, "query-changed-disk-areas-filefault.xml", 500)]);
    let err = vc
        .query_changed_disk_areas(&vm(), &snapshot(), 2000, 0, "bogus")
        .unwrap_err();
    match &err {
        VmwareError::Fault {
            fault_type,
            message,
        } => {
            assert_eq!(fault_type, "FileFault");
            assert!(message.contains("web01.vmdk"), "{message}");
        }
        other => panic!("expected a FileFault, got {other:?}"),
    }
    assert!(err.to_string().contains("FileFault"));

    // The paging helper stops at the fault too.
    let err = vc
        .query_all_changed_disk_areas(&vm(), &snapshot(), 2000, CAPACITY, "bogus")
        .unwrap_err();
    assert!(matches!(err, VmwareError::Fault { .. }), "{err:?}");
}

#[test]
fn a_page_that_makes_no_progress_is_an_error() {
    // Asking from 8 GiB but being answered with the first page (which ends
    // at 8 GiB) would loop forever; the helper must refuse.
    struct Stuck;
    impl Transport for Stuck {
        fn post(&mut self, _: &str, _: &[(String, String)], _: &str) -> Result<Response, String> {
            Ok(Response {
                status: 200,
                headers: Vec::new(),
                body: recording("query-changed-disk-areas-page1.xml"),
            })
        }
    }
    let mut vc = Client::new(Stuck, "https://vc.example.test/sdk");
    let err = vc
        .query_all_changed_disk_areas(&vm(), &snapshot(), 2000, CAPACITY, CHANGE_ID)
        .unwrap_err();
    assert!(err.to_string().contains("no progress"), "{err}");
}

#[test]
fn every_recording_says_it_is_one() {
    for file in [
        "query-changed-disk-areas-page1.xml",
        "query-changed-disk-areas-page2.xml",
        "query-changed-disk-areas-empty.xml",
        "query-changed-disk-areas-filefault.xml",
    ] {
        let text = recording(file);
        assert!(
            text.starts_with("<!-- RECORDING, not a live answer"),
            "{file} must start with the recording comment"
        );
    }
    assert!(recording("README.md").contains("not live"));
}
