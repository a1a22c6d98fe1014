//! Builds the sandbox's root filesystem inside a fresh mount namespace, as bubblewrap
//! does.
//!
//! The root must contain only what the action may see: system dirs, tools, inputs
//! read-only; outputs and temp writable; everything else (workspace, home, the store)
//! absent or covered. The main type is [`Entry`], one mount of the plan that
//! [`build_root`] sorts by depth and applies.
//!
//! Layout during construction: a scratch tmpfs becomes `/` with the host tree at
//! `/oldroot` and the future root (another tmpfs) at `/newroot`; binds go from
//! `/oldroot<path>` to `/newroot<path>`, then `/newroot` becomes the root.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::protocol::{bytes_path, InitSpec};

/// Host system directories made visible read-only (or as symlinks, if they are ones).
/// Callers use this list to know which tool locations need no extra exposure.
pub const SYSTEM_DIRS: [&str; 9] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
];

/// Device nodes bound from the host into the fresh `/dev`.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

const OLD: &str = "/oldroot";
const NEW: &str = "/newroot";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// Recreate a host symlink (e.g. `/bin -> usr/bin` on merged-/usr systems).
    Symlink(PathBuf),
    /// Recursive bind from the same host path, then read-only (with its submounts).
    BindRo,
    /// Recursive bind from the same host path, writable.
    BindRw,
    /// `tmp_dir` bound writable at `/tmp`.
    Tmp(PathBuf),
    /// Recursive bind from another host path (canonical), read-only unless `writable`.
    BindFrom { src: PathBuf, writable: bool },
    /// Fresh minimal `/dev`.
    Dev,
    /// Fresh `/proc` for the new PID namespace.
    Proc,
    /// Empty tmpfs over a hidden directory, if it would be visible.
    Hide,
}

impl Kind {
    /// Among mounts at the same depth, later ones win when paths coincide: a writable
    /// bind must cover a read-only one of the same path.
    fn rank(&self) -> u8 {
        match self {
            Kind::BindRw | Kind::BindFrom { writable: true, .. } => 1,
            Kind::Hide => 2,
            _ => 0,
        }
    }
}

/// One step of the plan: `dst` is the absolute path inside the sandbox; for binds the
/// source is the same host path.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    dst: PathBuf,
    kind: Kind,
}

/// Build the root and switch to it. Must run in PID 1 of the new PID namespace (so
/// `/proc` shows the sandbox's processes) with full capabilities in the user namespace.
pub(crate) fn build_root(spec: &InitSpec) -> Result<(), String> {
    // Canonical host paths, computed before the host tree moves: mounting at them never
    // traverses a symlink inside the new root, whose absolute targets would resolve
    // against the scratch root while building.
    let entries = plan(spec)?;

    mount(None, "/", None, libc::MS_REC | libc::MS_PRIVATE, None)
        .map_err(|e| format!("making mounts private failed: {e}"))?;
    // Any existing directory can host the scratch root: pivot_root detaches it from
    // there, so the host's own /tmp is visible again at /oldroot/tmp afterwards.
    mount(
        Some(Path::new("tmpfs")),
        "/tmp",
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(|e| format!("mounting the scratch tmpfs on `/tmp` failed: {e}"))?;
    std::env::set_current_dir("/tmp").map_err(|e| format!("cannot enter scratch root: {e}"))?;
    for dir in ["newroot", "oldroot"] {
        std::fs::create_dir(dir).map_err(|e| format!("cannot create scratch `{dir}`: {e}"))?;
    }
    pivot_root(".", "oldroot").map_err(|e| format!("pivot_root into scratch root failed: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("cannot enter `/`: {e}"))?;
    mount(
        Some(Path::new("tmpfs")),
        NEW,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(|e| format!("mounting the new root tmpfs failed: {e}"))?;

    let mut remount_ro_later = Vec::new();
    for entry in &entries {
        apply(entry, &mut remount_ro_later)?;
    }

    umount_detach(OLD).map_err(|e| format!("detaching the host tree failed: {e}"))?;
    std::env::set_current_dir(NEW).map_err(|e| format!("cannot enter new root: {e}"))?;
    // Stack the scratch root under the new one, then drop it.
    pivot_root(".", ".").map_err(|e| format!("pivot_root into new root failed: {e}"))?;
    umount_detach(".").map_err(|e| format!("detaching the scratch root failed: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("cannot enter `/`: {e}"))?;

    // Mounts we created ourselves carry no locked flags, so a plain read-only remount
    // works; done last because building needed them writable for mount points.
    remount_ro_later.push(PathBuf::from("/"));
    for path in &remount_ro_later {
        let flags =
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
        mount(None, path, None, flags, None)
            .map_err(|e| format!("remounting `{}` read-only failed: {e}", path.display()))?;
    }
    Ok(())
}

fn plan(spec: &InitSpec) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    for dir in SYSTEM_DIRS {
        match std::fs::symlink_metadata(dir) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(dir)
                    .map_err(|e| format!("cannot read symlink `{dir}`: {e}"))?;
                entries.push(Entry {
                    dst: PathBuf::from(dir),
                    kind: Kind::Symlink(target),
                });
            }
            Ok(_) => entries.push(Entry {
                dst: PathBuf::from(dir),
                kind: Kind::BindRo,
            }),
            Err(_) => {}
        }
    }
    let mut identity = |path: &[u8], kind: Kind, what: &str| -> Result<(), String> {
        let given = bytes_path(path);
        let canonical = match std::fs::canonicalize(&given) {
            Ok(c) => c,
            // A hidden dir that does not exist has nothing to hide.
            Err(_) if kind == Kind::Hide => return Ok(()),
            Err(e) => {
                return Err(format!(
                    "{what} `{}` is not accessible: {e}",
                    given.display()
                ))
            }
        };
        // Also mount at the caller's spelling, so paths through a host symlink that the
        // sandbox does not have keep working.
        if canonical != given {
            entries.push(Entry {
                dst: given,
                kind: kind.clone(),
            });
        }
        entries.push(Entry {
            dst: canonical,
            kind,
        });
        Ok(())
    };
    for p in &spec.expose_readonly {
        identity(p, Kind::BindRo, "exposed path")?;
    }
    identity(&spec.exec_root, Kind::BindRo, "exec root")?;
    for p in &spec.writable {
        identity(p, Kind::BindRw, "writable dir")?;
    }
    identity(&spec.tmp_dir, Kind::BindRw, "tmp dir")?;
    for p in &spec.hide {
        identity(p, Kind::Hide, "hidden dir")?;
    }
    for (host, inside, writable) in &spec.binds {
        let src = std::fs::canonicalize(bytes_path(host)).map_err(|e| {
            format!(
                "bind source `{}` is not accessible: {e}",
                bytes_path(host).display()
            )
        })?;
        entries.push(Entry {
            dst: bytes_path(inside),
            kind: Kind::BindFrom {
                src,
                writable: *writable,
            },
        });
    }
    let tmp_src = std::fs::canonicalize(bytes_path(&spec.tmp_dir))
        .map_err(|e| format!("tmp dir is not accessible: {e}"))?;
    entries.push(Entry {
        dst: PathBuf::from("/tmp"),
        kind: Kind::Tmp(tmp_src),
    });
    entries.push(Entry {
        dst: PathBuf::from("/dev"),
        kind: Kind::Dev,
    });
    entries.push(Entry {
        dst: PathBuf::from("/proc"),
        kind: Kind::Proc,
    });
    Ok(order(entries))
}

/// Shallow before deep, so a deeper mount (the exec root) lands on top of a shallower
/// one (a tmpfs hiding the workspace that contains it). Exact duplicates are dropped,
/// and a hide never covers something mounted explicitly at the same path.
fn order(mut entries: Vec<Entry>) -> Vec<Entry> {
    entries.sort_by(|a, b| {
        (depth(&a.dst), a.kind.rank(), &a.dst).cmp(&(depth(&b.dst), b.kind.rank(), &b.dst))
    });
    entries.dedup();
    let explicit: Vec<PathBuf> = entries
        .iter()
        .filter(|e| e.kind != Kind::Hide)
        .map(|e| e.dst.clone())
        .collect();
    entries.retain(|e| e.kind != Kind::Hide || !explicit.contains(&e.dst));
    entries
}

fn depth(p: &Path) -> usize {
    p.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
}

fn under(prefix: &str, path: &Path) -> PathBuf {
    let mut s = PathBuf::from(prefix);
    s.push(path.strip_prefix("/").unwrap_or(path));
    s
}

fn apply(entry: &Entry, remount_ro_later: &mut Vec<PathBuf>) -> Result<(), String> {
    let dst = under(NEW, &entry.dst);
    let src = under(OLD, &entry.dst);
    let shown = entry.dst.display();
    match &entry.kind {
        Kind::Symlink(target) => {
            std::os::unix::fs::symlink(target, &dst)
                .map_err(|e| format!("cannot create symlink `{shown}`: {e}"))?;
        }
        Kind::BindRo | Kind::BindRw => {
            let is_dir = std::fs::metadata(&src)
                .map_err(|e| format!("cannot access `{shown}`: {e}"))?
                .is_dir();
            make_mount_point(&dst, is_dir)?;
            mount(
                Some(src.as_path()),
                &dst,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )
            .map_err(|e| format!("bind-mounting `{shown}` failed: {e}"))?;
            if entry.kind == Kind::BindRo {
                remount_tree_ro(&dst)
                    .map_err(|e| format!("making `{shown}` read-only failed: {e}"))?;
            }
        }
        Kind::BindFrom { src, writable } => {
            let from = under(OLD, src);
            let is_dir = std::fs::metadata(&from)
                .map_err(|e| format!("cannot access `{}`: {e}", src.display()))?
                .is_dir();
            make_mount_point(&dst, is_dir)?;
            mount(
                Some(from.as_path()),
                &dst,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )
            .map_err(|e| format!("bind-mounting `{}` at `{shown}` failed: {e}", src.display()))?;
            if !writable {
                remount_tree_ro(&dst)
                    .map_err(|e| format!("making `{shown}` read-only failed: {e}"))?;
            }
        }
        Kind::Tmp(tmp_src) => {
            make_mount_point(&dst, true)?;
            mount(
                Some(under(OLD, tmp_src).as_path()),
                &dst,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )
            .map_err(|e| format!("bind-mounting the tmp dir on `/tmp` failed: {e}"))?;
        }
        Kind::Hide => {
            // Only cover what the mounts so far made visible; creating the directory
            // would otherwise write into a writable bind (e.g. the tmp dir).
            if !std::fs::symlink_metadata(&dst).is_ok_and(|m| m.is_dir()) {
                return Ok(());
            }
            mount(
                Some(Path::new("tmpfs")),
                &dst,
                Some("tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV,
                Some("mode=0755"),
            )
            .map_err(|e| format!("hiding `{shown}` failed: {e}"))?;
            remount_ro_later.push(entry.dst.clone());
        }
        Kind::Dev => {
            build_dev(&dst)?;
            remount_ro_later.push(entry.dst.clone());
        }
        Kind::Proc => {
            make_mount_point(&dst, true)?;
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            // Some container runtimes mask parts of the host /proc, and the kernel then
            // refuses a fresh proc in a user namespace (EPERM): run without /proc rather
            // than expose the host's.
            if let Err(e) = mount(Some(Path::new("proc")), &dst, Some("proc"), flags, None) {
                if !matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) {
                    return Err(format!("mounting `/proc` failed: {e}"));
                }
            }
        }
    }
    Ok(())
}

fn build_dev(dst: &Path) -> Result<(), String> {
    make_mount_point(dst, true)?;
    let flags = libc::MS_NOSUID | libc::MS_NODEV;
    mount(
        Some(Path::new("tmpfs")),
        dst,
        Some("tmpfs"),
        flags,
        Some("mode=0755"),
    )
    .map_err(|e| format!("mounting `/dev` failed: {e}"))?;
    for name in DEVICES {
        let src = Path::new(OLD).join("dev").join(name);
        if !src.exists() {
            continue;
        }
        let node = dst.join(name);
        make_mount_point(&node, false)?;
        mount(Some(src.as_path()), &node, None, libc::MS_BIND, None)
            .map_err(|e| format!("binding `/dev/{name}` failed: {e}"))?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dst.join(link))
            .map_err(|e| format!("cannot create `/dev/{link}`: {e}"))?;
    }
    let shm = dst.join("shm");
    make_mount_point(&shm, true)?;
    mount(
        Some(Path::new("tmpfs")),
        &shm,
        Some("tmpfs"),
        flags,
        Some("mode=1777"),
    )
    .map_err(|e| format!("mounting `/dev/shm` failed: {e}"))?;
    Ok(())
}

fn make_mount_point(path: &Path, is_dir: bool) -> Result<(), String> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Ok(());
    }
    let result = if is_dir {
        std::fs::create_dir_all(path)
    } else {
        path.parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::File::create(path).map(drop))
    };
    result.map_err(|e| format!("cannot create mount point `{}`: {e}", display_inside(path)))
}

/// The sandbox-side spelling of a path under `/newroot`, for messages.
fn display_inside(path: &Path) -> String {
    match path.strip_prefix(NEW) {
        Ok(rest) => format!("/{}", rest.display()),
        Err(_) => path.display().to_string(),
    }
}

/// Make `top` and every mount below it read-only. A recursive bind brings submounts
/// along (e.g. container-provided `/etc/hosts`), and each needs its own remount.
fn remount_tree_ro(top: &Path) -> io::Result<()> {
    let info = std::fs::read(Path::new(OLD).join("proc/self/mountinfo"))?;
    let mut points = vec![top.to_path_buf()];
    for line in info.split(|&b| b == b'\n') {
        let Some(field) = line.split(|&b| b == b' ').nth(4) else {
            continue;
        };
        let point = bytes_path(&unescape_mountinfo(field));
        if point != top && point.starts_with(top) && !points.contains(&point) {
            points.push(point);
        }
    }
    for point in &points {
        remount_ro(point)?;
    }
    Ok(())
}

/// Read-only bind remount that keeps the source mount's nosuid/nodev/noexec and atime
/// flags: inside a user namespace the kernel locks those and rejects any change (EPERM).
fn remount_ro(path: &Path) -> io::Result<()> {
    let c = cstring(path)?;
    // SAFETY: zeroed statvfs is a valid out-buffer; c is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let keep = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
    for (st_flag, ms_flag) in keep {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    // Without an explicit atime mode the kernel would default to relatime.
    if st.f_flag & (libc::ST_NOATIME | libc::ST_RELATIME) == 0 {
        flags |= libc::MS_STRICTATIME;
    }
    mount(None, path, None, flags, None)
}

/// Mount points in mountinfo escape space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 4 <= field.len() {
            let oct = &field[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                out.push((oct[0] - b'0') * 64 + (oct[1] - b'0') * 8 + (oct[2] - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn mount(
    source: Option<&Path>,
    target: impl AsRef<Path>,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = source.map(cstring).transpose()?;
    let target = cstring(target.as_ref())?;
    let fstype = fstype.map(|s| CString::new(s).expect("static fs type"));
    let data = data.map(|s| CString::new(s).expect("static mount data"));
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is either null or a NUL-terminated string that outlives
    // the call.
    let r = unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn pivot_root(new_root: &str, put_old: &str) -> io::Result<()> {
    let new_root = CString::new(new_root).expect("static path");
    let put_old = CString::new(put_old).expect("static path");
    // SAFETY: two NUL-terminated strings.
    if unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn umount_detach(path: &str) -> io::Result<()> {
    let path = CString::new(path).expect("static path");
    // SAFETY: NUL-terminated string.
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(dst: &str, kind: Kind) -> Entry {
        Entry {
            dst: PathBuf::from(dst),
            kind,
        }
    }

    #[test]
    fn shallow_mounts_first_and_writable_over_readonly() {
        let ordered = order(vec![
            e("/ws/sb/exec/out", Kind::BindRw),
            e("/ws/sb/exec", Kind::BindRo),
            e("/ws", Kind::Hide),
            e("/ws/sb/exec", Kind::BindRw),
            e("/usr", Kind::BindRo),
        ]);
        let dsts: Vec<_> = ordered
            .iter()
            .map(|e| (e.dst.to_str().unwrap(), e.kind.clone()))
            .collect();
        assert_eq!(
            dsts,
            vec![
                ("/usr", Kind::BindRo),
                ("/ws", Kind::Hide),
                ("/ws/sb/exec", Kind::BindRo),
                ("/ws/sb/exec", Kind::BindRw),
                ("/ws/sb/exec/out", Kind::BindRw),
            ]
        );
    }

    #[test]
    fn hide_never_covers_an_explicit_mount_of_the_same_path() {
        let ordered = order(vec![e("/data", Kind::Hide), e("/data", Kind::BindRo)]);
        assert_eq!(ordered, vec![e("/data", Kind::BindRo)]);
    }

    #[test]
    fn mountinfo_unescapes_octal() {
        assert_eq!(unescape_mountinfo(br"/a\040b\134c"), b"/a b\\c".to_vec());
        assert_eq!(unescape_mountinfo(br"/x\04"), br"/x\04".to_vec());
    }
}
