//! Load every eBPF program for real, the way the daemon does, into a
//! throw-away object: no pins, maps freed on exit. Cgroup programs are also
//! attached to an empty scratch cgroup (removed after), the tracepoint to
//! its event, so the check covers what the daemon will do at start.

use std::{fs::File, path::PathBuf};

use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{CgroupAttachMode, CgroupSock, CgroupSockAddr, Lsm, TracePoint},
};

use super::Check;
use crate::{cli::error_chain, identity::CgroupFs};

const SOCK_ADDR: &[&str] = &["connect4", "connect6", "sendmsg4", "sendmsg6"];

/// Removes the scratch cgroup on every path out.
struct Scratch(Option<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir(p);
        }
    }
}

pub fn checks() -> Vec<Check> {
    let mut out = Vec::new();
    let btf = match Btf::from_sys_fs() {
        Ok(b) => b,
        Err(e) => {
            out.push(Check::fail(
                "programs",
                format!("cannot read BTF: {e}"),
                "see the btf check",
            ));
            return out;
        }
    };
    let mut loader = EbpfLoader::new();
    loader.btf(&btf);
    loader.map_max_entries("EVENTS", 4096);
    let mut ebpf = match loader.load(crate::EBPF_OBJECT) {
        Ok(e) => e,
        Err(e) => {
            out.push(Check::fail(
                "maps",
                format!("creating the maps failed: {}", error_chain(&e)),
                "run as root with CAP_BPF; on kernels before 5.11 raise RLIMIT_MEMLOCK (LimitMEMLOCK=infinity)",
            ));
            return out;
        }
    };
    out.push(Check::ok(
        "maps",
        "created (LPM tries, hash and array maps, ring buffers)",
    ));

    let scratch = CgroupFs::discover().ok().and_then(|c| {
        let p = c
            .root()
            .join(format!("palisade-doctor-{}", std::process::id()));
        std::fs::create_dir(&p).ok().map(|()| p)
    });
    let scratch = Scratch(scratch);
    let cgroup = scratch.0.as_ref().and_then(|p| File::open(p).ok());

    for name in SOCK_ADDR {
        out.push(cgroup_check(&mut ebpf, name, cgroup.as_ref(), |e, n, c| {
            let prog: &mut CgroupSockAddr = program(e, n)?;
            prog.load().map_err(|e| clean(&e))?;
            if let Some(c) = c {
                let id = prog
                    .attach(c, CgroupAttachMode::Single)
                    .map_err(|e| format!("attach: {}", clean(&e)))?;
                prog.detach(id).map_err(|e| clean(&e))?;
            }
            Ok(())
        }));
    }
    out.push(cgroup_check(
        &mut ebpf,
        "sock_create",
        cgroup.as_ref(),
        |e, n, c| {
            let prog: &mut CgroupSock = program(e, n)?;
            prog.load().map_err(|e| clean(&e))?;
            if let Some(c) = c {
                let id = prog
                    .attach(c, CgroupAttachMode::Single)
                    .map_err(|e| format!("attach: {}", clean(&e)))?;
                prog.detach(id).map_err(|e| clean(&e))?;
            }
            Ok(())
        },
    ));

    let tp = (|| -> Result<(), String> {
        let prog: &mut TracePoint = program(&mut ebpf, "cgroup_mkdir")?;
        prog.load().map_err(|e| clean(&e))?;
        let id = prog
            .attach("cgroup", "cgroup_mkdir")
            .map_err(|e| format!("attach: {}", clean(&e)))?;
        prog.detach(id).map_err(|e| clean(&e))
    })();
    out.push(match tp {
        Ok(()) => Check::ok(
            "hook:cgroup_mkdir",
            "tracepoint/cgroup/cgroup_mkdir loads and attaches (new cgroups are enrolled at once)",
        ),
        Err(e) => Check::fail(
            "hook:cgroup_mkdir",
            format!("tracepoint/cgroup/cgroup_mkdir: {e}"),
            "needs CAP_PERFMON and tracefs (mount -t tracefs nodev /sys/kernel/tracing)",
        ),
    });

    let lsm = (|| -> Result<(), String> {
        let prog: &mut Lsm = program(&mut ebpf, "socket_create")?;
        prog.load("socket_create", &btf).map_err(|e| clean(&e))?;
        let id = prog
            .attach()
            .map_err(|e| format!("attach: {}", clean(&e)))?;
        prog.detach(id).map_err(|e| clean(&e))
    })();
    out.push(match lsm {
        Ok(()) => Check::ok(
            "hook:socket_create",
            "lsm/socket_create loads and attaches: sockets outside the allowlist are refused to every enrolled process",
        ),
        Err(e) => {
            let listed = std::fs::read_to_string("/sys/kernel/security/lsm")
                .is_ok_and(|l| l.trim().split(',').any(|x| x == "bpf"));
            let fix = if listed {
                "bpf is an active LSM, yet this kernel refuses BPF LSM programs (a lockdown or hypervisor/sandbox policy); until that is lifted, start agents with `palisade exec`, or run cgroup-selected agents without CAP_NET_RAW"
            } else {
                "enable BPF LSM (CONFIG_BPF_LSM=y and bpf in the lsm= boot parameter); meanwhile start agents with `palisade exec`, or run cgroup-selected agents without CAP_NET_RAW"
            };
            Check::warn(
                "hook:socket_create",
                format!(
                    "lsm/socket_create refused ({e}): sockets outside the allowlist are refused to agents started with `palisade exec` (seccomp); cgroup-selected agents that create one are killed by a syscall tracepoint, after the fact"
                ),
                fix,
            )
        }
    });
    super::guards::checks(&mut ebpf, cgroup.as_ref(), &mut out);
    out
}

/// aya's message, without an empty verifier log.
pub(super) fn clean(e: &dyn std::error::Error) -> String {
    let s = error_chain(e);
    s.strip_suffix(". Verifier output: ")
        .or_else(|| s.strip_suffix(". Verifier output:"))
        .map_or_else(|| s.clone(), str::to_string)
}

pub(super) fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program `{name}` is missing from the object"))?;
    prog.try_into().map_err(|e| clean(&e))
}

pub(super) fn cgroup_check(
    ebpf: &mut Ebpf,
    name: &'static str,
    cgroup: Option<&File>,
    f: impl FnOnce(&mut Ebpf, &str, Option<&File>) -> Result<(), String>,
) -> Check {
    let section = match name {
        "egress" => "cgroup_skb/egress".to_string(),
        _ => format!("cgroup/{name}"),
    };
    match f(ebpf, name, cgroup) {
        Ok(()) => Check::ok(
            format!("hook:{name}"),
            format!(
                "{section} loads{}",
                if cgroup.is_some() {
                    " and attaches"
                } else {
                    " (attach not tried: no scratch cgroup)"
                }
            ),
        ),
        Err(e) => Check::fail(
            format!("hook:{name}"),
            format!("{section}: {e}"),
            "needs CAP_BPF and CAP_NET_ADMIN and a kernel with cgroup socket hooks (CONFIG_CGROUP_BPF=y)",
        ),
    }
}
