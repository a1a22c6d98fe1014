//! Tests of the deterministic archive writer and the safe extractor.
//!
//! Determinism is checked by building the same tree twice in different places with
//! different host metadata; safety by hand-crafting hostile archives with the tar crate's
//! raw header API (bypassing its own path checks) and checking each is refused by name
//! without anything written outside the destination.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use mlbuild_rules::archive::{
    extract, extract_reader, write_tar_zst, ArchiveError, EntryKind, ExtractLimits, LimitExceeded,
    Refusal,
};

/// Writes the same tree into `root`, with files created in the order given and with the
/// given host modes, so order and permissions of the host differ between calls.
fn make_tree(root: &Path, reverse: bool, loose_modes: bool) {
    let mut files: Vec<(&str, &[u8], bool)> = vec![
        ("model.json", b"{\"w\": [1, 2, 3]}\n", false),
        ("metrics.json", b"{\"f1\": 0.9}\n", false),
        ("serve.py", b"#!/usr/bin/env python3\nprint('hi')\n", true),
        ("sub/a.txt", b"a\n", false),
        ("sub/deeper/b.bin", &[0u8, 1, 2, 255], false),
        ("sub.txt", b"sorts between `sub` and `sub/...`\n", false),
    ];
    if reverse {
        files.reverse();
    }
    for (rel, data, exec) in files {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        let mode = match (exec, loose_modes) {
            (true, false) => 0o755,
            (true, true) => 0o700,
            (false, false) => 0o644,
            (false, true) => 0o600,
        };
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
}

fn archive_bytes(root: &Path, mtime: u64) -> Vec<u8> {
    let mut out = Vec::new();
    write_tar_zst(root, &mut out, mtime).unwrap();
    out
}

fn decompress(bytes: &[u8]) -> Vec<u8> {
    zstd::decode_all(bytes).unwrap()
}

fn open_dir(path: &Path) -> Dir {
    Dir::open_ambient_dir(path, ambient_authority()).unwrap()
}

#[test]
fn same_tree_in_two_places_gives_identical_bytes() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    make_tree(a.path(), false, false);
    make_tree(b.path(), true, true);
    // Different host mtimes too.
    let old = fs::File::options()
        .write(true)
        .open(b.path().join("model.json"))
        .unwrap();
    old.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(12345))
        .unwrap();

    let bytes_a = archive_bytes(a.path(), 0);
    let bytes_b = archive_bytes(b.path(), 0);
    assert!(bytes_a == bytes_b, "archives of the same tree differ");

    // The epoch is part of the content.
    let later = archive_bytes(a.path(), 1_700_000_000);
    assert_ne!(bytes_a, later);
    assert_eq!(later, archive_bytes(b.path(), 1_700_000_000));
}

#[test]
fn headers_are_normalized_and_sorted() {
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path(), true, true);
    let tar_bytes = decompress(&archive_bytes(dir.path(), 1_600_000_000));
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    let mut names = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let h = entry.header();
        let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        assert!(h.as_ustar().is_some(), "{name}: not a ustar header");
        assert_eq!(h.uid().unwrap(), 0, "{name}");
        assert_eq!(h.gid().unwrap(), 0, "{name}");
        assert_eq!(h.mtime().unwrap(), 1_600_000_000, "{name}");
        assert_eq!(h.username_bytes(), Some(&b""[..]), "{name}");
        assert_eq!(h.groupname_bytes(), Some(&b""[..]), "{name}");
        let want_mode = if name.ends_with('/') || name == "serve.py" {
            0o755
        } else {
            0o644
        };
        assert_eq!(h.mode().unwrap(), want_mode, "{name}");
        if name.ends_with('/') {
            assert_eq!(h.entry_type(), tar::EntryType::Directory);
        } else {
            assert_eq!(h.entry_type(), tar::EntryType::Regular);
        }
        names.push(name);
    }
    assert_eq!(
        names,
        [
            "metrics.json",
            "model.json",
            "serve.py",
            "sub/",
            "sub.txt",
            "sub/a.txt",
            "sub/deeper/",
            "sub/deeper/b.bin",
        ]
    );
}

#[test]
fn round_trip_reproduces_the_tree() {
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), false, true);
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(150));
    fs::create_dir_all(src.path().join("d".repeat(120))).unwrap();
    fs::write(src.path().join(&long), b"long path").unwrap();

    let bytes = archive_bytes(src.path(), 0);
    let dest = tempfile::tempdir().unwrap();
    let report = extract_reader(
        bytes.as_slice(),
        &open_dir(dest.path()),
        &ExtractLimits::default(),
    )
    .unwrap();
    assert!(report.compressed_bytes as usize == bytes.len());

    let files: Vec<_> = report
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .collect();
    assert_eq!(files.len(), 7);
    for e in files {
        let want = fs::read(src.path().join(&e.path)).unwrap();
        let got_path = dest.path().join(&e.path);
        assert_eq!(fs::read(&got_path).unwrap(), want, "{}", e.path);
        assert_eq!(e.size, want.len() as u64);
        let mode = fs::metadata(&got_path).unwrap().permissions().mode() & 0o777;
        let want_mode = if e.path == "serve.py" { 0o755 } else { 0o644 };
        assert_eq!(mode & !0o022, want_mode & !0o022, "{}", e.path);
    }
    assert!(report.entries.iter().any(|e| e.path == long));
}

#[test]
fn extract_from_a_file_path() {
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), false, false);
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("a.tar.zst");
    write_tar_zst(src.path(), fs::File::create(&archive).unwrap(), 0).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let report = extract(&archive, &open_dir(dest.path()), &ExtractLimits::default()).unwrap();
    assert_eq!(report.entries.len(), 8);
    assert_eq!(
        fs::read(dest.path().join("sub/deeper/b.bin")).unwrap(),
        [0u8, 1, 2, 255]
    );
}

#[test]
fn symlinks_in_the_input_are_refused() {
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), false, false);
    std::os::unix::fs::symlink("/etc/passwd", src.path().join("sub/link")).unwrap();
    let err = write_tar_zst(src.path(), Vec::new(), 0).unwrap_err();
    match err {
        ArchiveError::Unsupported { path, .. } => assert!(path.ends_with("sub/link")),
        other => panic!("unexpected {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Hostile archives

/// A raw header: the name and link name are copied into the header bytes as they are, so
/// the tar crate's own path checks do not stop us writing `..` or `/`.
fn raw_header(name: &[u8], ty: tar::EntryType, size: u64, link: Option<&[u8]>) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    if let Some(link) = link {
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(ty);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    h
}

/// An entry to craft: name, type, data, link target.
type RawEntry<'a> = (&'a [u8], tar::EntryType, &'a [u8], Option<&'a [u8]>);

/// The entries as a compressed tar.
fn hostile(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, ty, data, link) in entries {
        let h = raw_header(name, *ty, data.len() as u64, *link);
        b.append(&h, *data).unwrap();
    }
    zstd::encode_all(b.into_inner().unwrap().as_slice(), 3).unwrap()
}

/// A sandbox: `outside/` next to `dest/`, so escapes are detectable.
struct Sandbox {
    root: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("dest")).unwrap();
        fs::create_dir(root.path().join("outside")).unwrap();
        Sandbox { root }
    }
    fn dest(&self) -> PathBuf {
        self.root.path().join("dest")
    }
    fn extract(&self, bytes: &[u8]) -> Result<(), ArchiveError> {
        extract_reader(bytes, &open_dir(&self.dest()), &ExtractLimits::default()).map(|_| ())
    }
    /// Nothing but `dest/` and an empty `outside/` may exist in the sandbox root.
    fn assert_nothing_escaped(&self) {
        let mut top: Vec<_> = fs::read_dir(self.root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        top.sort();
        assert_eq!(top, ["dest", "outside"]);
        assert_eq!(
            fs::read_dir(self.root.path().join("outside"))
                .unwrap()
                .count(),
            0,
            "something was written outside the destination"
        );
    }
}

fn refused(err: ArchiveError) -> (String, Refusal) {
    match err {
        ArchiveError::Refused { entry, reason } => (entry, reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

const R: tar::EntryType = tar::EntryType::Regular;

#[test]
fn parent_dir_components_are_refused() {
    for name in [
        &b"../outside/evil"[..],
        b"a/../../outside/evil",
        b"./../outside/x",
    ] {
        let sb = Sandbox::new();
        let err = sb
            .extract(&hostile(&[(name, R, b"pwned", None)]))
            .unwrap_err();
        let (entry, reason) = refused(err);
        assert_eq!(entry.as_bytes(), name);
        assert_eq!(reason, Refusal::ParentDir);
        sb.assert_nothing_escaped();
    }
}

#[test]
fn absolute_paths_are_refused() {
    let sb = Sandbox::new();
    let abs = sb.root.path().join("outside/evil");
    let name = abs.to_str().unwrap().as_bytes();
    let err = sb
        .extract(&hostile(&[(name, R, b"pwned", None)]))
        .unwrap_err();
    assert_eq!(refused(err).1, Refusal::Absolute);
    sb.assert_nothing_escaped();
}

#[test]
fn symlinks_are_refused_and_nothing_is_written_through_them() {
    let sb = Sandbox::new();
    let bytes = hostile(&[
        (b"link", tar::EntryType::Symlink, b"", Some(b"../outside")),
        (b"link/evil", R, b"pwned", None),
    ]);
    let (entry, reason) = refused(sb.extract(&bytes).unwrap_err());
    assert_eq!(entry, "link");
    assert_eq!(
        reason,
        Refusal::Symlink {
            target: "../outside".into()
        }
    );
    assert!(fs::symlink_metadata(sb.dest().join("link")).is_err());
    sb.assert_nothing_escaped();
}

#[test]
fn hardlinks_are_refused() {
    let sb = Sandbox::new();
    let target = sb.root.path().join("outside/secret");
    let bytes = hostile(&[(
        b"innocent",
        tar::EntryType::Link,
        b"",
        Some(target.to_str().unwrap().as_bytes()),
    )]);
    let (entry, reason) = refused(sb.extract(&bytes).unwrap_err());
    assert_eq!(entry, "innocent");
    assert!(matches!(reason, Refusal::Hardlink { .. }));
    sb.assert_nothing_escaped();
}

#[test]
fn a_symlink_already_in_the_destination_is_not_followed_out() {
    // Models a race: something plants `dest/sub -> ../outside` while we extract. cap-std
    // resolves every path beneath the handle and refuses to leave it.
    let sb = Sandbox::new();
    std::os::unix::fs::symlink("../outside", sb.dest().join("sub")).unwrap();
    let err = sb
        .extract(&hostile(&[(b"sub/evil", R, b"pwned", None)]))
        .unwrap_err();
    assert!(
        matches!(&err, ArchiveError::Extract { entry, .. } if entry == "sub/evil"),
        "{err:?}"
    );
    sb.assert_nothing_escaped();
}

#[test]
fn duplicate_names_are_refused() {
    for second in [&b"a.txt"[..], b"./a.txt", b"a.txt/"] {
        let sb = Sandbox::new();
        let ty = if second.ends_with(b"/") {
            tar::EntryType::Directory
        } else {
            R
        };
        let bytes = hostile(&[(b"a.txt", R, b"first", None), (second, ty, b"", None)]);
        let (entry, reason) = refused(sb.extract(&bytes).unwrap_err());
        assert_eq!(entry.as_bytes(), second);
        assert_eq!(reason, Refusal::Duplicate);
        // The first one was not overwritten.
        assert_eq!(fs::read(sb.dest().join("a.txt")).unwrap(), b"first");
    }
}

#[test]
fn a_path_below_a_file_is_refused() {
    let sb = Sandbox::new();
    let bytes = hostile(&[(b"a", R, b"file", None), (b"a/b", R, b"x", None)]);
    let (entry, reason) = refused(sb.extract(&bytes).unwrap_err());
    assert_eq!(entry, "a/b");
    assert_eq!(reason, Refusal::UnderFile { file: "a".into() });
}

#[test]
fn devices_and_fifos_are_refused() {
    for ty in [
        tar::EntryType::Char,
        tar::EntryType::Block,
        tar::EntryType::Fifo,
    ] {
        let sb = Sandbox::new();
        let (entry, reason) = refused(
            sb.extract(&hostile(&[(b"dev", ty, b"", None)]))
                .unwrap_err(),
        );
        assert_eq!(entry, "dev");
        assert!(matches!(reason, Refusal::Special { .. }), "{ty:?}");
        assert_eq!(fs::read_dir(sb.dest()).unwrap().count(), 0);
    }
}

#[test]
fn a_pax_path_is_checked_like_any_other() {
    // The header name is harmless; the PAX record that overrides it is not.
    let mut b = tar::Builder::new(Vec::new());
    let record = b"28 path=../outside/evil.txt\n";
    b.append(
        &raw_header(
            b"PaxHeaders/x",
            tar::EntryType::XHeader,
            record.len() as u64,
            None,
        ),
        &record[..],
    )
    .unwrap();
    b.append(&raw_header(b"harmless.txt", R, 5, None), &b"pwned"[..])
        .unwrap();
    let bytes = zstd::encode_all(b.into_inner().unwrap().as_slice(), 3).unwrap();
    let sb = Sandbox::new();
    let (entry, reason) = refused(sb.extract(&bytes).unwrap_err());
    assert_eq!(entry, "../outside/evil.txt");
    assert_eq!(reason, Refusal::ParentDir);
    sb.assert_nothing_escaped();
}

/// A tar holding one `size`-byte file of zeros, compressed as it is generated (the test
/// never holds it in memory).
fn zero_bomb(size: u64) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    {
        let mut b = tar::Builder::new(&mut enc);
        b.append(
            &raw_header(b"weights.bin", R, size, None),
            std::io::repeat(0).take(size),
        )
        .unwrap();
        b.finish().unwrap();
    }
    enc.finish().unwrap()
}

#[test]
fn a_decompression_bomb_is_refused_without_being_written() {
    let bomb = zero_bomb(1 << 30);
    assert!(bomb.len() < 1 << 20, "bomb is {} bytes", bomb.len());

    // Default limits: the ratio check stops it after the grace amount.
    let sb = Sandbox::new();
    let err = extract_reader(
        bomb.as_slice(),
        &open_dir(&sb.dest()),
        &ExtractLimits::default(),
    )
    .unwrap_err();
    match &err {
        ArchiveError::Limit {
            entry,
            limit: LimitExceeded::Ratio { limit: 1000 },
        } => assert_eq!(entry, "weights.bin"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        !sb.dest().join("weights.bin").exists(),
        "the partial file was left behind"
    );

    // A total-size limit below the declared size refuses it before writing anything.
    let limits = ExtractLimits {
        max_total_bytes: 512 << 20,
        ..ExtractLimits::default()
    };
    let err = extract_reader(bomb.as_slice(), &open_dir(&sb.dest()), &limits).unwrap_err();
    assert!(
        matches!(
            &err,
            ArchiveError::Limit {
                limit: LimitExceeded::TotalBytes { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(fs::read_dir(sb.dest()).unwrap().count(), 0);
}

/// The documented bound, exactly: with the default limits an archive may hold 64 MiB of
/// zeros (any ratio); one byte more is a bomb, refused with nothing of it left behind.
#[test]
fn the_bomb_limit_is_64_mib_of_content_exactly() {
    let limit = ExtractLimits::default().ratio_grace_bytes;
    assert_eq!(limit, 64 << 20);
    let sb = Sandbox::new();
    let report = extract_reader(
        zero_bomb(limit).as_slice(),
        &open_dir(&sb.dest()),
        &ExtractLimits::default(),
    )
    .unwrap();
    assert_eq!(report.entries[0].size, limit);
    assert_eq!(
        fs::metadata(sb.dest().join("weights.bin")).unwrap().len(),
        limit
    );

    let sb = Sandbox::new();
    let err = extract_reader(
        zero_bomb(limit + 1).as_slice(),
        &open_dir(&sb.dest()),
        &ExtractLimits::default(),
    )
    .unwrap_err();
    match &err {
        ArchiveError::Limit {
            entry,
            limit: LimitExceeded::Ratio { limit: 1000 },
        } => assert_eq!(entry, "weights.bin"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(fs::read_dir(sb.dest()).unwrap().count(), 0);
}

#[test]
fn too_many_entries_are_refused() {
    let names: Vec<String> = (0..20).map(|i| format!("f{i:02}")).collect();
    let entries: Vec<_> = names
        .iter()
        .map(|n| (n.as_bytes(), R, &b"x"[..], None))
        .collect();
    let bytes = hostile(&entries);
    let dest = tempfile::tempdir().unwrap();
    let limits = ExtractLimits {
        max_entries: 10,
        ..ExtractLimits::default()
    };
    let err = extract_reader(bytes.as_slice(), &open_dir(dest.path()), &limits).unwrap_err();
    match err {
        ArchiveError::Limit {
            entry,
            limit: LimitExceeded::Entries { limit: 10 },
        } => assert_eq!(entry, "f10"),
        other => panic!("unexpected {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Damaged archives

fn valid_archive() -> Vec<u8> {
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), false, false);
    // Enough incompressible data that cutting the stream lands inside a file.
    let mut noise = Vec::with_capacity(300_000);
    let mut x: u32 = 1;
    for _ in 0..300_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        noise.push((x >> 16) as u8);
    }
    fs::write(src.path().join("weights.bin"), noise).unwrap();
    archive_bytes(src.path(), 0)
}

#[test]
fn a_truncated_archive_is_reported() {
    let bytes = valid_archive();
    for cut in [bytes.len() / 2, bytes.len() - 1, 10] {
        let dest = tempfile::tempdir().unwrap();
        let err = extract_reader(
            &bytes[..cut],
            &open_dir(dest.path()),
            &ExtractLimits::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, ArchiveError::Truncated { .. }),
            "cut at {cut}: {err:?}"
        );
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}

#[test]
fn a_tar_without_end_marker_is_truncated() {
    // Cut at an entry boundary and recompressed: a valid zstd stream of an incomplete tar.
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("a"), b"a").unwrap();
    let tar_bytes = decompress(&archive_bytes(src.path(), 0));
    let without_marker = &tar_bytes[..1024];
    let bytes = zstd::encode_all(without_marker, 3).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let err = extract_reader(
        bytes.as_slice(),
        &open_dir(dest.path()),
        &ExtractLimits::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ArchiveError::Truncated { at } if at.contains("end-of-archive")),
        "{err:?}"
    );
}

#[test]
fn a_flipped_byte_is_reported_as_corrupt() {
    let mut bytes = valid_archive();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    let dest = tempfile::tempdir().unwrap();
    let err = extract_reader(
        bytes.as_slice(),
        &open_dir(dest.path()),
        &ExtractLimits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ArchiveError::Corrupt { .. }), "{err:?}");
}

#[test]
fn trailing_data_after_the_end_marker_is_refused() {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("a"), b"a").unwrap();
    let mut tar_bytes = decompress(&archive_bytes(src.path(), 0));
    tar_bytes.extend_from_slice(&raw_header(b"hidden", R, 0, None).as_bytes()[..]);
    let bytes = zstd::encode_all(tar_bytes.as_slice(), 3).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let err = extract_reader(
        bytes.as_slice(),
        &open_dir(dest.path()),
        &ExtractLimits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ArchiveError::Corrupt { .. }), "{err:?}");
}

#[test]
fn writes_to_a_file_stream() {
    // `write_tar_zst` takes any writer; a file gets exactly the in-memory bytes.
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), false, false);
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("x.tar.zst");
    let mut f = fs::File::create(&path).unwrap();
    write_tar_zst(src.path(), &mut f, 7).unwrap();
    f.flush().unwrap();
    assert_eq!(fs::read(&path).unwrap(), archive_bytes(src.path(), 7));
}
