//! The guard programs, loaded and attached for real like the rest: the
//! setsockopt and egress cgroup hooks (source routes, kill switch), the
//! lineage raw tracepoints with the kernel structure offsets they need, and
//! the syscall tracepoints that stand in for BPF LSM.

use std::fs::File;

use aya::{
    Ebpf,
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockopt, RawTracePoint, TracePoint,
    },
};

use super::{
    Check,
    programs::{cgroup_check, clean, program},
};
use crate::bpf::guards::{FALLBACK_PROGRAMS, FALLBACK_RAW_PROGRAMS, KernelFacts, LINEAGE_PROGRAMS};

pub fn checks(ebpf: &mut Ebpf, cgroup: Option<&File>, out: &mut Vec<Check>) {
    out.push(cgroup_check(ebpf, "setsockopt", cgroup, |e, n, c| {
        let prog: &mut CgroupSockopt = program(e, n)?;
        prog.load().map_err(|e| clean(&e))?;
        if let Some(c) = c {
            let id = prog
                .attach(c, CgroupAttachMode::Single)
                .map_err(|e| format!("attach: {}", clean(&e)))?;
            prog.detach(id).map_err(|e| clean(&e))?;
        }
        Ok(())
    }));
    out.push(cgroup_check(ebpf, "egress", cgroup, |e, n, c| {
        let prog: &mut CgroupSkb = program(e, n)?;
        prog.load().map_err(|e| clean(&e))?;
        if let Some(c) = c {
            let id = prog
                .attach(c, CgroupSkbAttachType::Egress, CgroupAttachMode::Single)
                .map_err(|e| format!("attach: {}", clean(&e)))?;
            prog.detach(id).map_err(|e| clean(&e))?;
        }
        Ok(())
    }));

    let lineage = (|| -> Result<(), String> {
        KernelFacts::read().map_err(|e| clean(&e))?;
        for &(name, tracepoint) in LINEAGE_PROGRAMS {
            let prog: &mut RawTracePoint = program(ebpf, name)?;
            prog.load().map_err(|e| clean(&e))?;
            let id = prog
                .attach(tracepoint)
                .map_err(|e| format!("{name}: attach: {}", clean(&e)))?;
            prog.detach(id).map_err(|e| clean(&e))?;
        }
        Ok(())
    })();
    out.push(match lineage {
        Ok(()) => Check::ok(
            "hook:lineage",
            "raw tracepoints sched_process_fork/exec/exit and cgroup_attach_task load and attach (identity follows processes out of their cgroup)",
        ),
        Err(e) => Check::fail(
            "hook:lineage",
            format!("lineage tracking: {e}"),
            "needs CAP_BPF and CAP_PERFMON and kernel BTF; without it a root agent could leave its cgroup",
        ),
    });

    let fallback = (|| -> Result<(), String> {
        for &(name, category, event) in FALLBACK_PROGRAMS {
            let prog: &mut TracePoint = program(ebpf, name)?;
            prog.load().map_err(|e| clean(&e))?;
            let id = prog
                .attach(category, event)
                .map_err(|e| format!("{name}: attach: {}", clean(&e)))?;
            prog.detach(id).map_err(|e| clean(&e))?;
        }
        for &(name, tracepoint) in FALLBACK_RAW_PROGRAMS {
            let prog: &mut RawTracePoint = program(ebpf, name)?;
            prog.load().map_err(|e| clean(&e))?;
            let id = prog
                .attach(tracepoint)
                .map_err(|e| format!("{name}: attach: {}", clean(&e)))?;
            prog.detach(id).map_err(|e| clean(&e))?;
        }
        Ok(())
    })();
    out.push(match fallback {
        Ok(()) => Check::ok(
            "hook:syscall_guard",
            "syscalls/sys_enter_socket, _socketpair, _io_uring_setup and raw_syscalls/sys_enter (32-bit entry points) load and attach (the stand-in where BPF LSM is refused)",
        ),
        Err(e) => Check::warn(
            "hook:syscall_guard",
            format!("the syscall tracepoints do not load ({e})"),
            "where BPF LSM is refused too, only agents started with `palisade exec` are kept from other socket families",
        ),
    });
}
