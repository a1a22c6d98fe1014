//! Deterministic `.tar.zst` archives of a directory, and a safe extractor for untrusted ones.
//!
//! An artifact must be byte-for-byte the same on every machine that builds it from the same
//! inputs, so [`write_tar_zst`] fixes everything a tar writer normally takes from the host:
//! entry order (sorted by path bytes), mtime (`SOURCE_DATE_EPOCH`), owner (uid/gid 0, no
//! names), modes (0644, or 0755 for executables and directories), no xattrs, and the zstd
//! level and parameters ([`ZSTD_LEVEL`], one thread, content checksum on). Archives someone
//! else produced are opened with [`extract`], which writes only through a [`cap_std`]
//! directory handle and refuses, naming the entry, anything that could land outside the
//! destination or exhaust the disk: `..`, absolute paths, links, devices, duplicate names
//! and decompression bombs ([`ExtractLimits`]). Main types: [`ArchiveError`],
//! [`ExtractLimits`], [`ExtractReport`].
//!
//! The archive root is the directory itself: entries are `manifest.json`, `model.json`,
//! `sub/`, ... with no leading `./` or top-level directory.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt as _};

/// The zstd level of every archive. Level 3 (zstd's default) compresses float32 weights
/// exactly as well as level 19 (1.08:1: they are nearly incompressible) at 160x the speed
/// (319 vs 1.9 MB/s on one core; docs/package.md has the measurement), and JSON within 15%:
/// packaging a multi-GiB model must not take minutes. Part of the output format: changing
/// it changes every artifact's bytes.
pub const ZSTD_LEVEL: i32 = 3;

/// Largest PAX or GNU long-name extension header the extractor reads (they are held in
/// memory; real ones are a few hundred bytes).
pub const MAX_EXTENSION_HEADER: u64 = 64 * 1024;

const BLOCK: usize = 512;
/// Largest size a ustar header's 11 octal digits can hold; larger files get a PAX `size`.
const USTAR_MAX_SIZE: u64 = 0o77_777_777_777;

/// An error writing or extracting an archive; every variant names the file or entry.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ArchiveError {
    /// Reading the input directory or a file in it failed.
    #[error("cannot read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The input directory holds something that is not a regular file or directory.
    #[error("`{}` is {what}; an archive holds only regular files and directories", path.display())]
    #[diagnostic(help("copy the file's content instead of linking it"))]
    Unsupported { path: PathBuf, what: &'static str },
    /// A file name that is not UTF-8 (archives and manifests name files in UTF-8).
    #[error("`{}`: file name is not UTF-8", path.display())]
    NonUtf8 { path: PathBuf },
    /// A file's size changed between listing and archiving it.
    #[error("`{}` changed while it was being archived", path.display())]
    Changed { path: PathBuf },
    /// Writing the archive failed.
    #[error("cannot write the archive")]
    Write {
        #[source]
        source: io::Error,
    },
    /// An entry that could write outside the destination or is not allowed in an artifact.
    #[error("archive entry `{entry}` refused: {reason}")]
    Refused { entry: String, reason: Refusal },
    /// The archive exceeds an [`ExtractLimits`] bound (a decompression bomb, or just too big).
    #[error("archive entry `{entry}` refused: {limit}")]
    #[diagnostic(help("raise the extraction limit only if you trust this archive"))]
    Limit { entry: String, limit: LimitExceeded },
    /// The archive ends early: cut off in a download or copy.
    #[error("archive is truncated ({at})")]
    Truncated { at: String },
    /// The archive is damaged: bad zstd data or checksum, bad tar header.
    #[error("archive is corrupt ({at}): {detail}")]
    Corrupt { at: String, detail: String },
    /// Writing an extracted entry into the destination failed.
    #[error("cannot extract archive entry `{entry}`")]
    Extract {
        entry: String,
        #[source]
        source: io::Error,
    },
}

impl ArchiveError {
    /// The archive entry the error is about, for errors found while extracting.
    pub fn entry(&self) -> Option<&str> {
        match self {
            ArchiveError::Refused { entry, .. }
            | ArchiveError::Limit { entry, .. }
            | ArchiveError::Extract { entry, .. } => Some(entry),
            _ => None,
        }
    }
}

/// Why an entry is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A `..` component: could climb out of the destination.
    ParentDir,
    /// An absolute path.
    Absolute,
    /// A symbolic link (never part of an artifact; refused wherever it points).
    Symlink { target: String },
    /// A hard link.
    Hardlink { target: String },
    /// A second entry with a name already extracted.
    Duplicate,
    /// A path below an entry that is a regular file.
    UnderFile { file: String },
    /// A device, fifo or other special entry type.
    Special { what: &'static str },
    /// An entry name that is empty, or not UTF-8.
    BadName,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::ParentDir => write!(f, "path contains `..`"),
            Refusal::Absolute => write!(f, "path is absolute"),
            Refusal::Symlink { target } => write!(f, "symbolic link (to `{target}`)"),
            Refusal::Hardlink { target } => write!(f, "hard link (to `{target}`)"),
            Refusal::Duplicate => write!(f, "duplicate name"),
            Refusal::UnderFile { file } => write!(f, "its parent `{file}` is a file"),
            Refusal::Special { what } => write!(f, "{what} entries are not allowed"),
            Refusal::BadName => write!(f, "empty or non-UTF-8 name"),
        }
    }
}

/// Which [`ExtractLimits`] bound was exceeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitExceeded {
    TotalBytes { limit: u64 },
    Entries { limit: u64 },
    Ratio { limit: u64 },
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitExceeded::TotalBytes { limit } => {
                write!(f, "unpacked size would exceed the limit of {limit} bytes")
            }
            LimitExceeded::Entries { limit } => {
                write!(f, "more than {limit} entries")
            }
            LimitExceeded::Ratio { limit } => write!(
                f,
                "compression ratio above {limit}:1 (a decompression bomb)"
            ),
        }
    }
}

/// Bounds on what [`extract`] will unpack, against decompression bombs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Total decompressed bytes (tar headers and file contents).
    pub max_total_bytes: u64,
    /// Entries (files and directories).
    pub max_entries: u64,
    /// File content written per compressed byte consumed, over the archive so far...
    pub max_ratio: u64,
    /// ...enforced once the archive's file content exceeds this many bytes, so a small
    /// file of zeros (legitimately tiny when compressed) is not mistaken for a bomb. A
    /// byte of content is written only while the content written so far stays within
    /// `max(ratio_grace_bytes, max_ratio * compressed bytes consumed)`.
    pub ratio_grace_bytes: u64,
}

impl Default for ExtractLimits {
    /// 64 GiB, 100 000 entries, ratio 1000:1 beyond the first 64 MiB of content: generous
    /// for real models (weights compress less than 2:1; an all-zero tensor is the worst
    /// case) and tight for a bomb: 64 MiB of zeros extract, one byte more is refused, and
    /// whatever the bomb, at most `max(64 MiB, 1000 * its compressed bytes consumed)` of
    /// content is written.
    fn default() -> Self {
        ExtractLimits {
            max_total_bytes: 64 << 30,
            max_entries: 100_000,
            max_ratio: 1000,
            ratio_grace_bytes: 64 << 20,
        }
    }
}

/// What [`write_tar_zst`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReport {
    /// Entries (files and directories).
    pub entries: u64,
    /// Sum of the file sizes.
    pub file_bytes: u64,
}

/// One extracted entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedEntry {
    /// Relative POSIX path, without `./` or a trailing `/`.
    pub path: String,
    pub kind: EntryKind,
    /// Bytes (0 for directories).
    pub size: u64,
    /// Whether the entry had an execute bit (extracted as 0755, else 0644).
    pub executable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
}

/// What [`extract`] unpacked, in archive order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractReport {
    pub entries: Vec<ExtractedEntry>,
    /// Decompressed bytes read (headers, contents, padding).
    pub unpacked_bytes: u64,
    /// Compressed bytes read.
    pub compressed_bytes: u64,
}

// ---------------------------------------------------------------------------------------
// Writing

/// A file or directory to archive, by its path relative to the archive root.
struct Item {
    rel: String,
    abs: PathBuf,
    dir: bool,
    executable: bool,
    size: u64,
}

/// Writes `src_dir` as a deterministic `.tar.zst` stream to `out`, with every entry's mtime
/// set to `mtime` (normally `SOURCE_DATE_EPOCH`). Files are streamed, never held in memory.
/// Refuses symlinks and special files in `src_dir`.
pub fn write_tar_zst(
    src_dir: &Path,
    out: impl Write,
    mtime: u64,
) -> Result<WriteReport, ArchiveError> {
    let mut items = Vec::new();
    collect(src_dir, "", &mut items)?;
    // Byte order of the whole path: a directory sorts before its contents because it is
    // their prefix, and the order does not depend on how the host's readdir orders names.
    items.sort_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));

    let write_err = |source| ArchiveError::Write { source };
    let mut encoder = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL).map_err(write_err)?;
    // A checksum lets the extractor tell corruption from a valid stream.
    encoder.include_checksum(true).map_err(write_err)?;
    let mut tar = tar::Builder::new(encoder);

    let mut report = WriteReport {
        entries: 0,
        file_bytes: 0,
    };
    for item in &items {
        let (pax, header) = entry_headers(&item.rel, item.dir, item.executable, item.size, mtime)
            .map_err(write_err)?;
        if let Some((xh, records)) = pax {
            tar.append(&xh, records.as_slice()).map_err(write_err)?;
        }
        if item.dir {
            tar.append(&header, io::empty()).map_err(write_err)?;
        } else {
            let file = fs::File::open(&item.abs).map_err(|source| ArchiveError::Read {
                path: item.abs.clone(),
                source,
            })?;
            let mut counted = CountingRead {
                inner: file.take(item.size),
                count: 0,
                path: &item.abs,
                failed: None,
            };
            let res = tar.append(&header, &mut counted);
            if let Some(source) = counted.failed.take() {
                return Err(ArchiveError::Read {
                    path: item.abs.clone(),
                    source,
                });
            }
            res.map_err(write_err)?;
            if counted.count != item.size {
                return Err(ArchiveError::Changed {
                    path: item.abs.clone(),
                });
            }
            report.file_bytes += item.size;
        }
        report.entries += 1;
    }
    let encoder = tar.into_inner().map_err(write_err)?;
    let mut out = encoder.finish().map_err(write_err)?;
    out.flush().map_err(write_err)?;
    Ok(report)
}

/// A PAX extended header and its records.
type PaxHeader = (tar::Header, Vec<u8>);

/// The ustar header of one entry, preceded by a PAX extended header (and its records) when
/// ustar cannot hold the path (over 100 + 155 bytes) or the size (8 GiB or more). Every
/// field not set here stays zero: no owner names, no device numbers.
fn entry_headers(
    rel: &str,
    dir: bool,
    executable: bool,
    size: u64,
    mtime: u64,
) -> io::Result<(Option<PaxHeader>, tar::Header)> {
    let name = if dir {
        format!("{rel}/")
    } else {
        rel.to_string()
    };
    let mut header = tar::Header::new_ustar();
    let mut pax = Vec::new();
    if header.set_path(&name).is_err() {
        pax_record(&mut pax, "path", &name);
        header.set_path(truncate(&name, 90))?;
    }
    if size > USTAR_MAX_SIZE {
        pax_record(&mut pax, "size", &size.to_string());
    }
    header.set_size(size);
    header.set_mode(if dir || executable { 0o755 } else { 0o644 });
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    header.set_cksum();
    if pax.is_empty() {
        return Ok((None, header));
    }
    let mut xh = tar::Header::new_ustar();
    xh.set_path(truncate(
        &format!("PaxHeaders/{}", name.trim_end_matches('/')),
        90,
    ))?;
    xh.set_size(pax.len() as u64);
    xh.set_mode(0o644);
    xh.set_uid(0);
    xh.set_gid(0);
    xh.set_mtime(mtime);
    xh.set_entry_type(tar::EntryType::XHeader);
    xh.set_cksum();
    Ok((Some((xh, pax)), header))
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary
/// (the placeholder name in a header whose real path is in a PAX record).
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Reads a file into the tar stream, remembering a read error so it is reported against
/// the file rather than as a write error.
struct CountingRead<'a, R> {
    inner: R,
    count: u64,
    path: &'a Path,
    failed: Option<io::Error>,
}

impl<R: Read> Read for CountingRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.count += n as u64;
                Ok(n)
            }
            Err(e) => {
                let msg = format!("reading `{}`: {e}", self.path.display());
                self.failed = Some(e);
                Err(io::Error::other(msg))
            }
        }
    }
}

/// One PAX extended-header record: `"<len> <key>=<value>\n"`, where `<len>` counts itself.
fn pax_record(buf: &mut Vec<u8>, key: &str, value: &str) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    buf.extend_from_slice(format!("{len} {key}={value}\n").as_bytes());
}

/// Lists `dir` recursively into `items` (paths relative to the archive root `prefix`).
fn collect(dir: &Path, prefix: &str, items: &mut Vec<Item>) -> Result<(), ArchiveError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ArchiveError::Read { path, source }
    };
    for entry in fs::read_dir(dir).map_err(read_err(dir))? {
        let entry = entry.map_err(read_err(dir))?;
        let abs = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(ArchiveError::NonUtf8 { path: abs });
        };
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = fs::symlink_metadata(&abs).map_err(read_err(&abs))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            items.push(Item {
                rel: rel.clone(),
                abs: abs.clone(),
                dir: true,
                executable: true,
                size: 0,
            });
            collect(&abs, &rel, items)?;
        } else if ft.is_file() {
            items.push(Item {
                rel,
                abs,
                dir: false,
                executable: meta.permissions().mode() & 0o111 != 0,
                size: meta.len(),
            });
        } else {
            let what = if ft.is_symlink() {
                "a symbolic link"
            } else {
                "a special file"
            };
            return Err(ArchiveError::Unsupported { path: abs, what });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Extracting

/// Extracts the `.tar.zst` at `archive` into `dest`, refusing hostile or oversized content.
///
/// Every write goes through the `dest` handle (cap-std resolves paths beneath it and
/// refuses to follow anything out of it, even a symlink created concurrently), files are
/// created with `create_new` (nothing existing is overwritten) and modes 0644/0755.
/// Refused, with the entry named in the error: `..` components, absolute paths, symbolic
/// and hard links, devices and fifos, duplicate names, paths below a file, and archives
/// beyond `limits`. A partly written file is removed on error; other entries already
/// extracted stay, so extract into a fresh directory and discard it on error.
pub fn extract(
    archive: &Path,
    dest: &Dir,
    limits: &ExtractLimits,
) -> Result<ExtractReport, ArchiveError> {
    let file = fs::File::open(archive).map_err(|source| ArchiveError::Read {
        path: archive.to_path_buf(),
        source,
    })?;
    extract_reader(file, dest, limits)
}

/// [`extract`] from any reader of `.tar.zst` bytes.
pub fn extract_reader(
    reader: impl Read,
    dest: &Dir,
    limits: &ExtractLimits,
) -> Result<ExtractReport, ArchiveError> {
    let mut stream = Stream::new(reader, limits)?;
    let mut state = Extraction {
        dest,
        limits,
        seen: HashMap::new(),
        entries: Vec::new(),
    };
    state.run(&mut stream)?;
    Ok(ExtractReport {
        entries: state.entries,
        unpacked_bytes: stream.unpacked,
        compressed_bytes: stream.compressed.get(),
    })
}

/// Counts the compressed bytes the decoder has consumed, for the ratio limit. Not the
/// bytes it has read: it reads ahead by up to 128 KiB, and counting those would let a
/// bomb write `max_ratio` times its read-ahead (125 MiB) before being stopped.
struct ConsumedCounter<R> {
    inner: BufReader<R>,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for ConsumedCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

impl<R: Read> BufRead for ConsumedCounter<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.count.set(self.count.get() + amt as u64);
        self.inner.consume(amt);
    }
}

/// The decompressed stream, with the size limit enforced on every read and the ratio
/// limit on every write of file content.
struct Stream<R> {
    inner: R,
    unpacked: u64,
    /// File content written to the destination so far (what the ratio limit bounds).
    written: u64,
    compressed: Rc<Cell<u64>>,
    limits: ExtractLimits,
    /// Reused by every [`Stream::copy`]: an archive of many small files must not cost an
    /// allocation per file.
    buf: Vec<u8>,
}

/// The zstd decoder [`Stream`] reads from.
type Decoder<R> = zstd::stream::read::Decoder<'static, ConsumedCounter<R>>;

impl<R: Read> Stream<Decoder<R>> {
    /// Decompresses `reader`, counting what the decoder consumes of it.
    fn new(reader: R, limits: &ExtractLimits) -> Result<Self, ArchiveError> {
        let compressed = Rc::new(Cell::new(0u64));
        let counting = ConsumedCounter {
            inner: BufReader::with_capacity(zstd::zstd_safe::DCtx::in_size(), reader),
            count: Rc::clone(&compressed),
        };
        let decoder = zstd::stream::read::Decoder::with_buffer(counting).map_err(|e| {
            ArchiveError::Corrupt {
                at: "start".into(),
                detail: e.to_string(),
            }
        })?;
        Ok(Stream {
            inner: decoder,
            unpacked: 0,
            written: 0,
            compressed,
            limits: *limits,
            buf: vec![0u8; 256 * 1024],
        })
    }
}

impl<R: Read> Stream<R> {
    /// Reads some bytes; `Ok(0)` only at the end of the stream.
    fn read(&mut self, buf: &mut [u8], at: &str) -> Result<usize, ArchiveError> {
        let n = loop {
            match self.inner.read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(ArchiveError::Truncated { at: at.into() })
                }
                Err(e) => {
                    return Err(ArchiveError::Corrupt {
                        at: at.into(),
                        detail: e.to_string(),
                    })
                }
            }
        };
        self.unpacked += n as u64;
        if self.unpacked > self.limits.max_total_bytes {
            return Err(ArchiveError::Limit {
                entry: at.into(),
                limit: LimitExceeded::TotalBytes {
                    limit: self.limits.max_total_bytes,
                },
            });
        }
        Ok(n)
    }

    /// Accounts for `n` more bytes of file content about to be written, refusing them if
    /// they would take the content past `ratio_grace_bytes` at a ratio above `max_ratio`.
    /// Checked before the write, so nothing beyond the bound reaches the disk.
    fn allow_write(&mut self, n: usize, entry: &str) -> Result<(), ArchiveError> {
        let after = self.written.saturating_add(n as u64);
        let by_ratio = self.limits.max_ratio.saturating_mul(self.compressed.get());
        if after > self.limits.ratio_grace_bytes && after > by_ratio {
            return Err(ArchiveError::Limit {
                entry: entry.into(),
                limit: LimitExceeded::Ratio {
                    limit: self.limits.max_ratio,
                },
            });
        }
        self.written = after;
        Ok(())
    }

    /// Fills `buf` completely; `Ok(false)` if the stream ended before its first byte.
    fn read_full(&mut self, buf: &mut [u8], at: &str) -> Result<bool, ArchiveError> {
        let mut filled = 0;
        while filled < buf.len() {
            let n = self.read(&mut buf[filled..], at)?;
            if n == 0 {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(ArchiveError::Truncated { at: at.into() });
            }
            filled += n;
        }
        Ok(true)
    }

    /// Copies exactly `len` bytes to `out` (or discards them if `out` is `None`), then
    /// skips the padding to the next 512-byte block. `content`: the bytes are a file's
    /// content, which the ratio limit bounds (not an extension header held in memory).
    fn copy(
        &mut self,
        len: u64,
        out: Option<&mut dyn Write>,
        entry: &str,
        content: bool,
    ) -> Result<(), ArchiveError> {
        let mut buf = std::mem::take(&mut self.buf);
        let copied = self.copy_with(&mut buf, len, out, entry, content);
        self.buf = buf;
        copied?;
        let pad = (BLOCK as u64 - len % BLOCK as u64) % BLOCK as u64;
        let mut padding = [0u8; BLOCK];
        if pad > 0 && !self.read_full(&mut padding[..pad as usize], entry)? {
            return Err(ArchiveError::Truncated {
                at: format!("in `{entry}`"),
            });
        }
        Ok(())
    }

    fn copy_with(
        &mut self,
        buf: &mut [u8],
        len: u64,
        mut out: Option<&mut dyn Write>,
        entry: &str,
        content: bool,
    ) -> Result<(), ArchiveError> {
        let mut left = len;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = self.read(&mut buf[..want], entry)?;
            if n == 0 {
                return Err(ArchiveError::Truncated {
                    at: format!("in `{entry}`"),
                });
            }
            if content {
                self.allow_write(n, entry)?;
            }
            if let Some(out) = out.as_deref_mut() {
                out.write_all(&buf[..n])
                    .map_err(|source| ArchiveError::Extract {
                        entry: entry.into(),
                        source,
                    })?;
            }
            left -= n as u64;
        }
        Ok(())
    }
}

/// Extension data that applies to the next entry.
#[derive(Default)]
struct Pending {
    pax: Option<Vec<u8>>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

struct Extraction<'a> {
    dest: &'a Dir,
    limits: &'a ExtractLimits,
    /// Every extracted path and whether it is a directory.
    seen: HashMap<String, EntryKind>,
    entries: Vec<ExtractedEntry>,
}

impl Extraction<'_> {
    fn run<R: Read>(&mut self, stream: &mut Stream<R>) -> Result<(), ArchiveError> {
        let mut pending = Pending::default();
        let mut block = [0u8; BLOCK];
        loop {
            let at = match self.entries.last() {
                Some(e) => format!("after `{}`", e.path),
                None => "at the first entry".to_string(),
            };
            if !stream.read_full(&mut block, &at)? {
                return Err(ArchiveError::Truncated {
                    at: format!("{at}: no end-of-archive marker"),
                });
            }
            if block.iter().all(|&b| b == 0) {
                return self.finish(stream, &pending, &at);
            }
            let header = tar::Header::from_byte_slice(&block);
            check_checksum(header, &at)?;
            let raw_size = header.entry_size().map_err(|e| ArchiveError::Corrupt {
                at: at.clone(),
                detail: e.to_string(),
            })?;
            let ty = header.entry_type();

            // Extension headers: bounded, held in memory, applied to the next entry.
            let slot = match ty {
                tar::EntryType::XHeader => Some(&mut pending.pax),
                tar::EntryType::GNULongName => Some(&mut pending.long_name),
                tar::EntryType::GNULongLink => Some(&mut pending.long_link),
                _ => None,
            };
            if let Some(slot) = slot {
                if raw_size > MAX_EXTENSION_HEADER || slot.is_some() {
                    return Err(ArchiveError::Corrupt {
                        at,
                        detail: "oversized or repeated extension header".into(),
                    });
                }
                let mut data = Vec::with_capacity(raw_size as usize);
                stream.copy(raw_size, Some(&mut data), "extension header", false)?;
                *slot = Some(data);
                continue;
            }

            let pax = match pending.pax.take() {
                Some(data) => parse_pax(&data).map_err(|detail| ArchiveError::Corrupt {
                    at: at.clone(),
                    detail,
                })?,
                None => PaxFields::default(),
            };
            let name_bytes = pax
                .path
                .or(pending.long_name.take().map(trim_nul))
                .unwrap_or_else(|| header.path_bytes().into_owned());
            let link_bytes = pax
                .linkpath
                .or(pending.long_link.take().map(trim_nul))
                .or_else(|| header.link_name_bytes().map(|b| b.into_owned()));
            let size = pax.size.unwrap_or(raw_size);
            let display = String::from_utf8_lossy(&name_bytes).into_owned();
            let refuse = |reason| ArchiveError::Refused {
                entry: display.clone(),
                reason,
            };
            let link =
                || String::from_utf8_lossy(link_bytes.as_deref().unwrap_or(b"")).into_owned();

            let kind = match ty {
                tar::EntryType::Regular => EntryKind::File,
                tar::EntryType::Directory => EntryKind::Dir,
                tar::EntryType::Symlink => return Err(refuse(Refusal::Symlink { target: link() })),
                tar::EntryType::Link => return Err(refuse(Refusal::Hardlink { target: link() })),
                tar::EntryType::Char => {
                    return Err(refuse(Refusal::Special {
                        what: "character device",
                    }))
                }
                tar::EntryType::Block => {
                    return Err(refuse(Refusal::Special {
                        what: "block device",
                    }))
                }
                tar::EntryType::Fifo => return Err(refuse(Refusal::Special { what: "fifo" })),
                _ => {
                    return Err(refuse(Refusal::Special {
                        what: "unsupported tar entry type",
                    }))
                }
            };
            let Some(path) = normalize(&name_bytes).map_err(refuse)? else {
                // `./`: the destination itself.
                if kind == EntryKind::Dir && size == 0 {
                    continue;
                }
                return Err(refuse(Refusal::BadName));
            };
            if self.entries.len() as u64 >= self.limits.max_entries {
                return Err(ArchiveError::Limit {
                    entry: path,
                    limit: LimitExceeded::Entries {
                        limit: self.limits.max_entries,
                    },
                });
            }
            self.check_name(&path).map_err(refuse)?;
            // Refuse a bomb by its declared size before writing any of it.
            if stream.unpacked.saturating_add(size) > self.limits.max_total_bytes {
                return Err(ArchiveError::Limit {
                    entry: path,
                    limit: LimitExceeded::TotalBytes {
                        limit: self.limits.max_total_bytes,
                    },
                });
            }
            let executable = header.mode().map(|m| m & 0o111 != 0).unwrap_or(false);
            match kind {
                EntryKind::Dir => {
                    if size != 0 {
                        return Err(ArchiveError::Corrupt {
                            at: format!("`{path}`"),
                            detail: "directory entry with content".into(),
                        });
                    }
                    self.dest
                        .create_dir_all(&path)
                        .map_err(|source| ArchiveError::Extract {
                            entry: path.clone(),
                            source,
                        })?;
                }
                EntryKind::File => self.write_file(stream, &path, size, executable)?,
            }
            self.seen.insert(path.clone(), kind);
            self.entries.push(ExtractedEntry {
                path,
                kind,
                size: if kind == EntryKind::File { size } else { 0 },
                executable: kind == EntryKind::Dir || executable,
            });
        }
    }

    /// Duplicate names and paths below a file.
    fn check_name(&self, path: &str) -> Result<(), Refusal> {
        if self.seen.contains_key(path) {
            return Err(Refusal::Duplicate);
        }
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let parent = &path[..end + i];
            if self.seen.get(parent) == Some(&EntryKind::File) {
                return Err(Refusal::UnderFile {
                    file: parent.to_string(),
                });
            }
            end += i + 1;
        }
        Ok(())
    }

    fn write_file<R: Read>(
        &mut self,
        stream: &mut Stream<R>,
        path: &str,
        size: u64,
        executable: bool,
    ) -> Result<(), ArchiveError> {
        let extract_err = |source| ArchiveError::Extract {
            entry: path.to_string(),
            source,
        };
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dest.create_dir_all(parent).map_err(extract_err)?;
        }
        let mut options = OpenOptions::new();
        options
            .write(true)
            .create_new(true)
            .mode(if executable { 0o755 } else { 0o644 });
        // No BufWriter: the decoder hands out chunks of ~128 KiB, written as they come.
        let mut file = self.dest.open_with(path, &options).map_err(extract_err)?;
        let copied = stream.copy(size, Some(&mut file), path, true);
        if let Err(e) = copied {
            drop(file);
            // Leave no partial file (a bomb's first megabytes) behind.
            let _ = self.dest.remove_file(path);
            return Err(e);
        }
        Ok(())
    }

    /// After the first zero block: a second one, then only zero padding to the end of a
    /// valid zstd stream (reading to the end verifies the zstd checksum).
    fn finish<R: Read>(
        &self,
        stream: &mut Stream<R>,
        pending: &Pending,
        at: &str,
    ) -> Result<(), ArchiveError> {
        if pending.pax.is_some() || pending.long_name.is_some() || pending.long_link.is_some() {
            return Err(ArchiveError::Corrupt {
                at: at.into(),
                detail: "extension header without an entry".into(),
            });
        }
        let mut buf = [0u8; 8192];
        let mut seen = BLOCK as u64;
        loop {
            let n = stream.read(&mut buf, at)?;
            if n == 0 {
                break;
            }
            if buf[..n].iter().any(|&b| b != 0) {
                return Err(ArchiveError::Corrupt {
                    at: at.into(),
                    detail: "data after the end-of-archive marker".into(),
                });
            }
            seen += n as u64;
        }
        if seen < 2 * BLOCK as u64 {
            return Err(ArchiveError::Truncated {
                at: format!("{at}: incomplete end-of-archive marker"),
            });
        }
        Ok(())
    }
}

fn check_checksum(header: &tar::Header, at: &str) -> Result<(), ArchiveError> {
    let bytes = header.as_bytes();
    let sum: u32 = bytes[..148]
        .iter()
        .chain(&bytes[156..])
        .map(|&b| u32::from(b))
        .sum::<u32>()
        + 8 * u32::from(b' ');
    match header.cksum() {
        Ok(stored) if stored == sum => Ok(()),
        _ => Err(ArchiveError::Corrupt {
            at: at.into(),
            detail: "tar header checksum mismatch".into(),
        }),
    }
}

fn trim_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

/// The PAX records the extractor honours; others (mtime, uid, ...) are ignored because
/// extraction normalizes them anyway.
#[derive(Default)]
struct PaxFields {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
}

fn parse_pax(mut data: &[u8]) -> Result<PaxFields, String> {
    let mut fields = PaxFields::default();
    while !data.is_empty() {
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or("malformed PAX record")?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("malformed PAX record length")?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err("malformed PAX record".into());
        }
        let record = &data[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or("malformed PAX record")?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => fields.path = Some(value.to_vec()),
            b"linkpath" => fields.linkpath = Some(value.to_vec()),
            b"size" => {
                fields.size = Some(
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or("malformed PAX size")?,
                )
            }
            _ => {}
        }
        data = &data[len..];
    }
    Ok(fields)
}

/// Validates an entry name and returns it as a relative path without `.` components or a
/// trailing `/`; `None` for the root itself (`./`).
fn normalize(name: &[u8]) -> Result<Option<String>, Refusal> {
    let name = std::str::from_utf8(name).map_err(|_| Refusal::BadName)?;
    if name.is_empty() {
        return Err(Refusal::BadName);
    }
    if name.starts_with('/') {
        return Err(Refusal::Absolute);
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(Refusal::ParentDir),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    Ok(Some(parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        for value in ["a", &"x".repeat(95), &"y".repeat(994), &"z".repeat(9_993)] {
            let mut buf = Vec::new();
            pax_record(&mut buf, "path", value);
            let text = String::from_utf8(buf.clone()).unwrap();
            let (len, _) = text.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), buf.len(), "{text:?}");
            assert_eq!(parse_pax(&buf).unwrap().path.unwrap(), value.as_bytes());
        }
    }

    #[test]
    fn huge_files_and_long_paths_get_pax_records() {
        let size = 9 << 30;
        let (pax, header) = entry_headers("weights.bin", false, false, size, 0).unwrap();
        let (xh, records) = pax.expect("a PAX header for a 9 GiB file");
        assert_eq!(xh.entry_type(), tar::EntryType::XHeader);
        assert_eq!(xh.size().unwrap(), records.len() as u64);
        assert_eq!(parse_pax(&records).unwrap().size, Some(size));
        assert_eq!(header.entry_size().unwrap(), size);
        assert_eq!(header.path_bytes().as_ref(), b"weights.bin");

        let long = format!("{}/{}", "\u{e9}".repeat(80), "\u{fc}".repeat(120));
        let (pax, _) = entry_headers(&long, true, false, 0, 0).unwrap();
        let (_, records) = pax.expect("a PAX header for a long path");
        assert_eq!(
            parse_pax(&records).unwrap().path.unwrap(),
            format!("{long}/").into_bytes()
        );

        let (pax, header) = entry_headers("model.json", false, true, 10, 7).unwrap();
        assert!(pax.is_none());
        assert_eq!(header.mode().unwrap(), 0o755);
        assert_eq!(header.mtime().unwrap(), 7);
    }

    #[test]
    fn normalize_table() {
        let cases: &[(&str, Result<Option<&str>, Refusal>)] = &[
            ("a", Ok(Some("a"))),
            ("./a/b/", Ok(Some("a/b"))),
            ("a//b", Ok(Some("a/b"))),
            ("./", Ok(None)),
            ("/etc/passwd", Err(Refusal::Absolute)),
            ("../x", Err(Refusal::ParentDir)),
            ("a/../../x", Err(Refusal::ParentDir)),
            ("", Err(Refusal::BadName)),
        ];
        for (name, want) in cases {
            let got = normalize(name.as_bytes());
            assert_eq!(got, want.clone().map(|o| o.map(str::to_owned)), "{name:?}");
        }
    }

    /// Copies `len` bytes of zeros, compressed at level 1, through a [`Stream`] as file
    /// content into memory: what reached the "disk", and whether the limits allowed it.
    fn copy_zeros(len: u64, limits: &ExtractLimits) -> (u64, Result<(), ArchiveError>) {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        io::copy(&mut io::repeat(0).take(len), &mut enc).unwrap();
        let compressed = enc.finish().unwrap();
        let mut stream = Stream::new(compressed.as_slice(), limits).unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        let copied = stream.copy_with(&mut buf, len, Some(&mut out), "zeros", true);
        assert_eq!(stream.written, out.len() as u64);
        (out.len() as u64, copied)
    }

    #[test]
    fn the_ratio_limit_is_exact_and_nothing_beyond_it_is_written() {
        let grace = 1 << 20;
        let limits = ExtractLimits {
            ratio_grace_bytes: grace,
            ..ExtractLimits::default()
        };
        let (written, copied) = copy_zeros(grace, &limits);
        assert!(copied.is_ok(), "{copied:?}");
        assert_eq!(written, grace);
        let (written, copied) = copy_zeros(grace + 1, &limits);
        assert!(
            matches!(
                copied,
                Err(ArchiveError::Limit {
                    limit: LimitExceeded::Ratio { limit: 1000 },
                    ..
                })
            ),
            "{copied:?}"
        );
        assert!(written <= grace, "{written} bytes written");
        // Beyond the grace amount, content keeps flowing while its ratio is low enough.
        let roomy = ExtractLimits {
            ratio_grace_bytes: grace,
            max_ratio: u64::MAX / 2,
            ..ExtractLimits::default()
        };
        assert!(copy_zeros(grace + 1, &roomy).1.is_ok());
    }

    #[test]
    fn the_decoders_read_ahead_buys_a_bomb_nothing() {
        // 256 MiB of zeros compress to more than the grace amount divided by the ratio,
        // and the decoder reads up to 128 KiB ahead: counted as read rather than as
        // consumed, the compressed bytes would let this write tens of MiB.
        let grace = 1 << 20;
        let limits = ExtractLimits {
            ratio_grace_bytes: grace,
            ..ExtractLimits::default()
        };
        let (written, copied) = copy_zeros(256 << 20, &limits);
        assert!(copied.is_err());
        assert!(written <= grace, "{written} bytes written");
    }

    #[test]
    fn parse_pax_rejects_malformed_records() {
        assert!(parse_pax(b"9 path=a").is_err());
        assert!(parse_pax(b"x path=a\n").is_err());
        assert!(parse_pax(b"100 path=a\n").is_err());
        assert!(parse_pax(b"12 size=abc\n").is_err());
        assert_eq!(parse_pax(b"12 size=123\n").unwrap().size, Some(123));
    }
}
