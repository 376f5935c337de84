//! std/fs `walk` (1.0.x): pre-order, a directory before its contents,
//! with the same include rules for `exts`, `match` and `skip`.
//!
//! Differences from std/fs, all to keep PID 1 safe or results stable:
//! - siblings are visited in name order, not directory order;
//! - the walk uses an explicit stack, so deep trees cannot overflow ours;
//! - with `followSymlinks`, a link back to a directory being walked is
//!   reported but not entered again (std/fs would loop forever);
//! - `canonicalize: false` holds at every depth (std/fs forgets it below
//!   the first level);
//! - empty `exts`/`match` arrays mean "no filter" (std/fs would drop
//!   everything), matching the documented default of `[]`.

use super::jsregex::{compile_all, is_match};
use super::ops::io_error;
use super::paths::{basename, display, join, normalize, resolve};
use agent_proto::calls::{WalkEntry, WalkParams};
use agent_proto::{ErrorObject, Method};
use fancy_regex::Regex;
use std::fs::{self, FileType};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One `WalkEntry`.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub path: String,
    pub name: String,
    pub is_file: bool,
    pub is_dir: bool,
    pub is_symlink: bool,
}

impl Entry {
    pub(crate) fn to_wire(&self) -> WalkEntry {
        WalkEntry {
            path: self.path.clone(),
            name: self.name.clone(),
            is_file: self.is_file,
            is_directory: self.is_dir,
            is_symlink: self.is_symlink,
        }
    }
}

#[derive(Clone)]
pub(crate) struct WalkOptions {
    /// `None`: unlimited.
    pub max_depth: Option<u64>,
    pub include_files: bool,
    pub include_dirs: bool,
    pub include_symlinks: bool,
    pub follow_symlinks: bool,
    pub canonicalize: bool,
    /// Each with a leading dot; empty means no filter.
    pub exts: Vec<String>,
    /// Empty means no filter.
    pub matches: Vec<Regex>,
    pub skip: Vec<Regex>,
}

impl Default for WalkOptions {
    fn default() -> Self {
        Self {
            max_depth: None,
            include_files: true,
            include_dirs: true,
            include_symlinks: true,
            follow_symlinks: false,
            canonicalize: true,
            exts: Vec::new(),
            matches: Vec::new(),
            skip: Vec::new(),
        }
    }
}

/// Walk's options from its params, regexes compiled; `None` when
/// `maxDepth` is negative (std/fs then yields nothing at all).
pub(crate) fn options(p: &WalkParams) -> Result<Option<WalkOptions>, ErrorObject> {
    let m = Method::Walk.as_str();
    let max_depth = match p.max_depth {
        None => None,
        Some(d) if d < 0.0 => return Ok(None),
        Some(d) if d.is_infinite() => None,
        // JS compares fractional depths; flooring gives the same walk.
        Some(d) => Some(d.floor() as u64),
    };
    let exts = p
        .exts
        .iter()
        .map(|e| {
            if e.starts_with('.') {
                e.clone()
            } else {
                format!(".{e}")
            }
        })
        .collect();
    Ok(Some(WalkOptions {
        max_depth,
        include_files: p.include_files,
        include_dirs: p.include_dirs,
        include_symlinks: p.include_symlinks,
        follow_symlinks: p.follow_symlinks,
        canonicalize: p.canonicalize,
        exts,
        matches: compile_all(m, "match", &p.r#match)?,
        skip: compile_all(m, "skip", &p.skip)?,
    }))
}

/// std/fs `createWalkEntry`: normalizes the path and stats it, following
/// symlinks (so `isSymlink` is always false here).
pub(crate) fn create_walk_entry(path: &str, cwd: &Path) -> io::Result<Entry> {
    let path = normalize(path);
    let md = fs::metadata(resolve(cwd, &path))?;
    Ok(Entry {
        name: basename(&path),
        is_file: md.is_file(),
        is_dir: md.is_dir(),
        is_symlink: md.is_symlink(),
        path,
    })
}

/// Walks `root` (a path as the caller wrote it) and returns the entries in
/// walk order.
pub(crate) fn walk(root: &str, opts: &WalkOptions, cwd: &Path) -> Result<Vec<Entry>, ErrorObject> {
    let mut walker = Walker {
        opts,
        cwd,
        out: Vec::new(),
    };
    let mut stack: Vec<Frame> = Vec::new();
    if let Some(frame) = walker.enter(root, opts.max_depth, &stack)? {
        stack.push(frame);
    }
    while let Some(top) = stack.last_mut() {
        let Some(child) = top.children.next() else {
            stack.pop();
            continue;
        };
        let descend = walker.visit_child(&top.dir, child)?;
        let depth = top.child_depth;
        if let Some(path) = descend {
            if let Some(frame) = walker.enter(&path, depth, &stack)? {
                stack.push(frame);
            }
        }
    }
    Ok(walker.out)
}

struct Child {
    name: String,
    file_type: FileType,
}

/// A directory being walked: what is left of its children.
struct Frame {
    dir: String,
    /// maxDepth for the walks of its subdirectories.
    child_depth: Option<u64>,
    children: std::vec::IntoIter<Child>,
    /// (dev, ino), kept only when following symlinks, to spot cycles.
    id: Option<(u64, u64)>,
}

struct Walker<'a> {
    opts: &'a WalkOptions,
    cwd: &'a Path,
    out: Vec<Entry>,
}

impl Walker<'_> {
    /// The start of std/fs `walk(root, {maxDepth})`: maybe yields `root`
    /// itself, then lists it unless depth or `skip` say no.
    fn enter(
        &mut self,
        root: &str,
        max_depth: Option<u64>,
        stack: &[Frame],
    ) -> Result<Option<Frame>, ErrorObject> {
        let fail = |e: io::Error| io_error("walk", root, &e);
        if self.opts.include_dirs && self.include(root, true)? {
            self.out
                .push(create_walk_entry(root, self.cwd).map_err(fail)?);
        }
        if max_depth == Some(0) || !self.include(root, false)? {
            return Ok(None);
        }
        let dir = resolve(self.cwd, root);
        let id = match self.opts.follow_symlinks {
            true => fs::metadata(&dir)
                .map(|md| Some((md.dev(), md.ino())))
                .map_err(fail)?,
            false => None,
        };
        if id.is_some() && stack.iter().any(|f| f.id == id) {
            return Ok(None);
        }
        Ok(Some(Frame {
            dir: root.to_string(),
            child_depth: max_depth.map(|d| d - 1),
            children: read_children(&dir).map_err(fail)?.into_iter(),
            id,
        }))
    }

    /// One directory entry: yields files and unfollowed symlinks; returns
    /// the path to walk for directories (and followed symlinks).
    fn visit_child(&mut self, dir: &str, child: Child) -> Result<Option<String>, ErrorObject> {
        let mut path = join(dir, &child.name);
        let ft = child.file_type;
        let (mut is_symlink, mut is_dir) = (ft.is_symlink(), ft.is_dir());
        if is_symlink {
            if !self.opts.follow_symlinks {
                if self.opts.include_symlinks && self.include(&path, true)? {
                    self.out.push(self.entry(&path, child.name, ft));
                }
                return Ok(None);
            }
            let fail = |e: io::Error| io_error("walk", &path, &e);
            let real = fs::canonicalize(resolve(self.cwd, &path)).map_err(fail)?;
            let md = fs::symlink_metadata(&real).map_err(fail)?;
            (is_symlink, is_dir) = (md.is_symlink(), md.is_dir());
            if self.opts.canonicalize {
                path = display(&real);
            }
        }
        if is_symlink || is_dir {
            return Ok(Some(path));
        }
        // Like std/fs, a followed symlink to a file keeps its link entry's
        // type flags (isSymlink true).
        if self.opts.include_files && self.include(&path, true)? {
            self.out.push(self.entry(&path, child.name, ft));
        }
        Ok(None)
    }

    fn entry(&self, path: &str, name: String, ft: FileType) -> Entry {
        Entry {
            path: path.to_string(),
            name,
            is_file: ft.is_file(),
            is_dir: ft.is_dir(),
            is_symlink: ft.is_symlink(),
        }
    }

    /// std/fs `include`: `exts` and `match` only when `filters`; `skip` always.
    fn include(&self, path: &str, filters: bool) -> Result<bool, ErrorObject> {
        if filters {
            let exts = &self.opts.exts;
            if !exts.is_empty() && !exts.iter().any(|ext| path.ends_with(ext.as_str())) {
                return Ok(false);
            }
            if !self.opts.matches.is_empty() && !any_match(&self.opts.matches, path)? {
                return Ok(false);
            }
        }
        Ok(!any_match(&self.opts.skip, path)?)
    }
}

fn any_match(patterns: &[Regex], path: &str) -> Result<bool, ErrorObject> {
    for re in patterns {
        if is_match(re, path)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A directory's entries by name; their types come from the directory
/// listing (symlinks not followed).
fn read_children(dir: &Path) -> io::Result<Vec<Child>> {
    let mut children = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        children.push(Child {
            name: entry.file_name().to_string_lossy().into_owned(),
            file_type: entry.file_type()?,
        });
    }
    children.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(children)
}
