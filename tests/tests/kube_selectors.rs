//! The selector patterns docs/deploy.md gives for Kubernetes pods, tried on
//! cgroup trees laid out as the kubelet lays them out with the systemd and
//! the cgroupfs cgroup drivers (containerd and CRI-O container scopes).

use palisade_tests::{DaemonProc, Probe, TcpServer, TestEnv, root_or_skip};

const UID: &str = "0c4b2a1e-7f3d-4c55-9b1a-2f8e6d4c3b21";
const OTHER_UID: &str = "99999999-7f3d-4c55-9b1a-2f8e6d4c3b21";
const CONTAINER: &str = "5f1e0c9a3b7d";

#[test]
fn documented_pod_selectors_match_kubelet_cgroups() {
    if !root_or_skip("documented_pod_selectors_match_kubelet_cgroups") {
        return;
    }
    let denied = TcpServer::start("127.0.0.1");
    let env = TestEnv::new("kube", "version: 1\n");
    let u = UID.replace('-', "_");
    let o = OTHER_UID.replace('-', "_");
    // systemd driver: QoS slices, pod slice with underscores, container scope.
    let sd_burstable = env.make_cgroup(&format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{CONTAINER}.scope"
    ));
    let sd_other = env.make_cgroup(&format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{o}.slice/crio-aaaa.scope"
    ));
    let sd_guaranteed_crio = env.make_cgroup(&format!(
        "kubepods.slice/kubepods-pod{o}.slice/crio-{CONTAINER}.scope"
    ));
    // cgroupfs driver: QoS directories, pod directory with dashes, container id.
    let fs_pod = env.make_cgroup(&format!("kubepods/besteffort/pod{UID}/{CONTAINER}"));
    let fs_other = env.make_cgroup(&format!("kubepods/pod{OTHER_UID}/bbbb"));

    let p = |rel: &str| env.selector_path(rel);
    let text = format!(
        "version: 1\nidentities:\n  - id: by-pod\n    selectors:\n      - cgroup: {}\n      - cgroup: {}\n    egress: {{}}\n  - id: by-container\n    selectors:\n      - cgroup: {}\n    egress: {{}}\n",
        p(&format!("kubepods.slice/**/kubepods-*pod{u}.slice")),
        p(&format!("kubepods/**/pod{UID}")),
        p(&format!("kubepods.slice/**/crio-{CONTAINER}.scope")),
    );
    env.write_policy(&text);
    let _d = DaemonProc::start(&env);
    let port = denied.port();
    let tcp = ["tcp", "127.0.0.1", port.as_str()];
    Probe::in_cgroup(&sd_burstable, &tcp).expect_eperm("systemd driver: the pod's container");
    Probe::in_cgroup(&fs_pod, &tcp).expect_eperm("cgroupfs driver: the pod's container");
    Probe::in_cgroup(&sd_guaranteed_crio, &tcp).expect_eperm("systemd driver: a container by id");
    Probe::in_cgroup(&sd_other, &tcp).expect_ok("another pod (systemd driver)");
    Probe::in_cgroup(&fs_other, &tcp).expect_ok("another pod (cgroupfs driver)");
    let by = |id: &str| {
        env.wait_audit(id, |e| e["identity"] == id && e["verdict"] == "deny")["cgroup_id"].clone()
    };
    assert!(!by("by-pod").is_null());
    assert!(!by("by-container").is_null());
}
