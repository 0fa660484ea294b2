//! What kind of program a path is: whether the dynamic loader will run it
//! (so `LD_PRELOAD` reaches it), and whose loader that is.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Run by a dynamic loader (the ELF's `PT_INTERP`, or a script's
    /// interpreter's); `musl` when that loader is musl's.
    Dynamic { musl: bool },
    /// No loader runs it (static ELF), or the loader would ignore
    /// `LD_PRELOAD` (set-user/group-ID program): only the pipe relay
    /// reaches it.
    Static,
}

const PT_INTERP: u32 = 3;

/// The loader path of an ELF file (its `PT_INTERP`), `Ok(None)` for an ELF
/// without one, `Err` when `f` is not an ELF file.
fn interp(f: &File) -> Result<Option<Vec<u8>>, ()> {
    let mut h = [0u8; 64];
    let n = f.read_at(&mut h, 0).map_err(|_| ())?;
    if n < 52 || &h[..4] != b"\x7fELF" {
        return Err(());
    }
    let is64 = h[4] == 2;
    let le = h[5] == 1;
    let u16_at = |b: &[u8], o: usize| {
        let v = [b[o], b[o + 1]];
        if le {
            u16::from_le_bytes(v)
        } else {
            u16::from_be_bytes(v)
        }
    };
    let u32_at = |b: &[u8], o: usize| {
        let v = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if le {
            u32::from_le_bytes(v)
        } else {
            u32::from_be_bytes(v)
        }
    };
    let u64_at = |b: &[u8], o: usize| {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[o..o + 8]);
        if le {
            u64::from_le_bytes(v)
        } else {
            u64::from_be_bytes(v)
        }
    };
    if is64 && n < 64 {
        return Err(());
    }
    let (phoff, phentsize, phnum) = if is64 {
        (u64_at(&h, 32), u16_at(&h, 54), u16_at(&h, 56))
    } else {
        (u64::from(u32_at(&h, 28)), u16_at(&h, 42), u16_at(&h, 44))
    };
    let min = if is64 { 56 } else { 32 };
    if usize::from(phentsize) < min {
        return Err(());
    }
    let mut ph = vec![0u8; usize::from(phentsize)];
    for i in 0..u64::from(phnum) {
        let at = phoff + i * u64::from(phentsize);
        f.read_exact_at(&mut ph, at).map_err(|_| ())?;
        if u32_at(&ph, 0) != PT_INTERP {
            continue;
        }
        let (off, size) = if is64 {
            (u64_at(&ph, 8), u64_at(&ph, 32))
        } else {
            (u64::from(u32_at(&ph, 4)), u64::from(u32_at(&ph, 16)))
        };
        if size == 0 || size > 4096 {
            return Err(());
        }
        let mut p = vec![0u8; size as usize];
        f.read_exact_at(&mut p, off).map_err(|_| ())?;
        while p.last() == Some(&0) {
            p.pop();
        }
        return Ok(Some(p));
    }
    Ok(None)
}

/// Whether the ELF file was built by Go: it has a `.go.buildinfo` or
/// `.note.go.buildid` section (the Go toolchain writes both).
fn is_go(f: &File) -> bool {
    let mut h = [0u8; 64];
    let Ok(n) = f.read_at(&mut h, 0) else {
        return false;
    };
    if n < 52 || &h[..4] != b"\x7fELF" {
        return false;
    }
    let is64 = h[4] == 2;
    let le = h[5] == 1;
    let num = |b: &[u8]| -> u64 {
        let mut v = [0u8; 8];
        if le {
            v[..b.len()].copy_from_slice(b);
            u64::from_le_bytes(v)
        } else {
            v[8 - b.len()..].copy_from_slice(b);
            u64::from_be_bytes(v)
        }
    };
    if is64 && n < 64 {
        return false;
    }
    let (shoff, shentsize, shnum, shstrndx) = if is64 {
        (
            num(&h[40..48]),
            num(&h[58..60]),
            num(&h[60..62]),
            num(&h[62..64]),
        )
    } else {
        (
            num(&h[32..36]),
            num(&h[46..48]),
            num(&h[48..50]),
            num(&h[50..52]),
        )
    };
    let min = if is64 { 64 } else { 40 };
    if shoff == 0 || shentsize < min || shnum == 0 || shnum > 4096 || shstrndx >= shnum {
        return false;
    }
    let mut table = vec![0u8; (shentsize * shnum) as usize];
    if f.read_exact_at(&mut table, shoff).is_err() {
        return false;
    }
    let sh = |i: u64| &table[(i * shentsize) as usize..((i + 1) * shentsize) as usize];
    // (name offset, file offset, size) of section i.
    let sec = |i: u64| {
        let s = sh(i);
        if is64 {
            (num(&s[0..4]), num(&s[24..32]), num(&s[32..40]))
        } else {
            (num(&s[0..4]), num(&s[16..20]), num(&s[20..24]))
        }
    };
    let (_, stroff, strsize) = sec(shstrndx);
    if strsize == 0 || strsize > 1 << 20 {
        return false;
    }
    let mut names = vec![0u8; strsize as usize];
    if f.read_exact_at(&mut names, stroff).is_err() {
        return false;
    }
    (0..shnum).any(|i| {
        let at = sec(i).0 as usize;
        let name = names.get(at..).unwrap_or_default();
        let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
        name == b".go.buildinfo" || name == b".note.go.buildid"
    })
}

/// The interpreter of a `#!` script, as an absolute path; None when `f`
/// is not one.
fn shebang(f: &mut File) -> Option<PathBuf> {
    let mut h = [0u8; 256];
    let n = f.read(&mut h).ok()?;
    let line = h[..n].strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&c| c == b'\n').unwrap_or(line.len())];
    let skip = line.iter().take_while(|c| c.is_ascii_whitespace()).count();
    let line = &line[skip..];
    let end = line
        .iter()
        .position(|c| c.is_ascii_whitespace())
        .unwrap_or(line.len());
    use std::os::unix::ffi::OsStrExt;
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(&line[..end])))
}

/// The kind of the executable at `path`. `Err` names why it cannot be
/// told (then the program is relayed: the relay reaches every program).
pub fn kind(path: &Path) -> Result<Kind, String> {
    kind_depth(path, 0)
}

fn kind_depth(path: &Path, depth: u32) -> Result<Kind, String> {
    let mut f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // The loader ignores LD_PRELOAD paths for a set-ID program (AT_SECURE).
    if meta.permissions().mode() & 0o6000 != 0 {
        return Ok(Kind::Static);
    }
    match interp(&f) {
        // Go writes with raw system calls even when linked dynamically
        // (cgo): a preloaded library never sees them, so Go programs are
        // relayed whatever their linking.
        Ok(Some(_)) if is_go(&f) => Ok(Kind::Static),
        Ok(Some(loader)) => Ok(Kind::Dynamic {
            musl: loader.windows(7).any(|w| w == b"ld-musl"),
        }),
        Ok(None) => Ok(Kind::Static),
        Err(()) => match shebang(&mut f) {
            // The kernel follows a few levels of interpreters; so do we.
            Some(i) if depth < 4 && i.is_absolute() => kind_depth(&i, depth + 1),
            Some(i) => Err(format!(
                "{}: cannot tell how its interpreter {} is linked",
                path.display(),
                i.display()
            )),
            None => Err(format!("{}: neither ELF nor #! script", path.display())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_and_a_script() {
        // Test binaries are linked like the host's programs: dynamically.
        let me = std::env::current_exe().unwrap();
        assert_eq!(kind(&me), Ok(Kind::Dynamic { musl: false }));
        let dir = std::env::temp_dir().join(format!("logtap-run-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("s");
        std::fs::write(&script, format!("#!{} -x\necho hi\n", me.display())).unwrap();
        assert_eq!(kind(&script), Ok(Kind::Dynamic { musl: false }));
        std::fs::write(&script, "plain text\n").unwrap();
        assert!(kind(&script).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
