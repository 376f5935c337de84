//! std/fs `expandGlob` (1.0.x) and the std/path glob-to-regex translation
//! it relies on (posix flavour).
//!
//! Why not `globset`: std/path's dialect differs from it in ways callers can
//! see — extended globs `?(..)`, `*(..)`, `+(..)`, `@(..)`, `!(..)`, POSIX
//! classes `[[:alpha:]]`, `[!..]` negation, and a segment whose brackets do
//! not balance being taken literally. So the translation below follows
//! std/path step by step and compiles the result with fancy-regex (needed
//! for the negative look-ahead that `!(..)` becomes).

use super::jsregex::is_match;
use super::paths::{join, resolve_lexical};
use super::walk::{create_walk_entry, walk, Entry, WalkOptions};
use agent_proto::calls::ExpandGlobParams;
use agent_proto::ErrorObject;
use fancy_regex::Regex;
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::OnceLock;

const SEP: &str = "/+";
const SEP_MAYBE: &str = "/*";
const GLOBSTAR: &str = "(?:[^/]*(?:/|$)+)*";
const WILDCARD: &str = "[^/]*";
/// What an empty glob matches: nothing.
const NEVER: &str = "[^\\s\\S]";

#[derive(Debug, Clone, Copy)]
pub(crate) struct GlobOptions {
    pub extended: bool,
    pub globstar: bool,
    pub case_insensitive: bool,
}

/// std/path `isGlob`: does `s` contain glob syntax (escapes aside)?
pub(crate) fn is_glob(s: &str) -> bool {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(
            r"\\(.)|(^!|\*|\?|[\].+)]\?|\[[^\\\]]+\]|\{[^\\}]+\}|\(\?[:!=][^\\)]+\)|\([^|]+\|[^\\)]+\))",
        )
        .ok()
    });
    let Some(re) = re else { return false };
    let mut rest = s;
    while !rest.is_empty() {
        let Ok(Some(caps)) = re.captures(rest) else {
            return false;
        };
        if caps.get(2).is_some() {
            return true;
        }
        let Some(whole) = caps.get(0) else {
            return false;
        };
        let mut idx = whole.end();
        // An escaped opener skips to its closer: `\{a,b}` is not a glob.
        let close = caps.get(1).and_then(|open| match open.as_str() {
            "{" => Some('}'),
            "(" => Some(')'),
            "[" => Some(']'),
            _ => None,
        });
        if let Some(n) = close.and_then(|c| rest[idx..].find(c)) {
            idx += n + 1;
        }
        if idx == 0 {
            return false;
        }
        rest = &rest[idx..];
    }
    false
}

/// std/path `globToRegExp` as regex source (anchored, flags inline).
pub(crate) fn glob_to_regex(glob: &str, o: GlobOptions) -> String {
    let flags = if o.case_insensitive { "(?i)" } else { "" };
    if glob.is_empty() {
        return format!("{flags}{NEVER}");
    }
    let mut chars: Vec<char> = glob.chars().collect();
    while chars.len() > 1 && chars.last() == Some(&'/') {
        chars.pop();
    }
    let mut re = String::new();
    let mut j = 0;
    while j < chars.len() {
        let (segment, mut i, ends_with_sep) = Segment::translate(&chars, j, o);
        re.push_str(&segment);
        if !ends_with_sep {
            re.push_str(if i < chars.len() { SEP } else { SEP_MAYBE });
        }
        while chars.get(i) == Some(&'/') {
            i += 1;
        }
        j = i;
    }
    format!("{flags}^{re}$")
}

pub(crate) fn compile_glob(glob: &str, o: GlobOptions) -> Result<Regex, ErrorObject> {
    Regex::new(&glob_to_regex(glob, o))
        .map_err(|e| ErrorObject::type_error(format!("expandGlob: cannot use glob '{glob}': {e}")))
}

#[derive(Clone, Copy, PartialEq)]
enum Group {
    Brace,
    /// An extended group: `?`, `*`, `+`, `@` or `!`.
    Ext(char),
}

/// The translation state of one path segment (the text between slashes).
struct Segment<'g> {
    g: &'g [char],
    o: GlobOptions,
    out: String,
    groups: Vec<Group>,
    in_range: bool,
    in_escape: bool,
    ends_with_sep: bool,
    /// `out`'s length right after the current `[` / `[^`, and whether the
    /// class is negated: JS allows an empty class, Rust regex syntax reads
    /// `[]` differently, so an empty one is rewritten at its `]`.
    range_open: (usize, usize, bool),
}

impl<'g> Segment<'g> {
    /// Translates the segment starting at `j`; returns its regex, the index
    /// just past it, and whether the regex already ends with a separator.
    fn translate(g: &'g [char], j: usize, o: GlobOptions) -> (String, usize, bool) {
        let mut s = Segment {
            g,
            o,
            out: String::new(),
            groups: Vec::new(),
            in_range: false,
            in_escape: false,
            ends_with_sep: false,
            range_open: (0, 0, false),
        };
        let mut i = j;
        while i < g.len() && g[i] != '/' {
            i = s.step(i) + 1;
        }
        if !s.groups.is_empty() || s.in_range || s.in_escape {
            // Unbalanced: std/path takes the whole segment literally.
            s.out.clear();
            g[j..i].iter().for_each(|&c| push_literal(&mut s.out, c));
            s.ends_with_sep = false;
        }
        (s.out, i, s.ends_with_sep)
    }

    fn at(&self, i: usize) -> Option<char> {
        self.g.get(i).copied()
    }

    /// Handles the character at `i`; returns the index of the last
    /// character it consumed.
    fn step(&mut self, i: usize) -> usize {
        let c = self.g[i];
        let next = self.at(i + 1);
        if self.in_escape {
            self.in_escape = false;
            match self.in_range {
                true => push_range_literal(&mut self.out, c),
                false => push_literal(&mut self.out, c),
            }
            return i;
        }
        if c == '\\' {
            self.in_escape = true;
            return i;
        }
        if c == '[' && !self.in_range {
            return self.open_range(i);
        }
        if c == '[' && next == Some(':') {
            if let Some(end) = self.posix_class(i) {
                return end;
            }
        }
        if c == ']' && self.in_range {
            self.close_range();
            return i;
        }
        if self.in_range {
            push_range_raw(&mut self.out, c);
            return i;
        }
        self.step_outside_range(i, c, next)
    }

    fn step_outside_range(&mut self, i: usize, c: char, next: Option<char>) -> usize {
        let top = self.groups.last().copied();
        let in_ext_group = matches!(top, Some(Group::Ext(_)));
        let ext_open = self.o.extended && next == Some('(');
        match c {
            ')' if in_ext_group => {
                self.out.push(')');
                match self.groups.pop() {
                    Some(Group::Ext('!')) => self.out.push_str(WILDCARD),
                    Some(Group::Ext('@')) => {}
                    Some(Group::Ext(q)) => self.out.push(q),
                    _ => {}
                }
            }
            '|' if in_ext_group => self.out.push('|'),
            '+' | '@' | '?' | '*' | '!' if ext_open => {
                self.groups.push(Group::Ext(c));
                self.out.push_str(if c == '!' { "(?!" } else { "(?:" });
                return i + 1;
            }
            '?' => self.out.push('.'),
            '{' => {
                self.groups.push(Group::Brace);
                self.out.push_str("(?:");
            }
            '}' if top == Some(Group::Brace) => {
                self.groups.pop();
                self.out.push(')');
            }
            ',' if top == Some(Group::Brace) => self.out.push('|'),
            '*' => return self.stars(i),
            _ => push_literal(&mut self.out, c),
        }
        i
    }

    /// `*`, or `**` as a whole segment (globstar).
    fn stars(&mut self, i: usize) -> usize {
        let prev = i.checked_sub(1).and_then(|k| self.at(k));
        let mut end = i;
        while self.at(end + 1) == Some('*') {
            end += 1;
        }
        let next = self.at(end + 1);
        let alone = matches!(prev, None | Some('/')) && matches!(next, None | Some('/'));
        if self.o.globstar && end - i == 1 && alone {
            self.out.push_str(GLOBSTAR);
            self.ends_with_sep = true;
        } else {
            self.out.push_str(WILDCARD);
        }
        end
    }

    fn open_range(&mut self, i: usize) -> usize {
        self.in_range = true;
        let start = self.out.len();
        self.out.push('[');
        let mut end = i;
        let mut negated = false;
        match self.at(i + 1) {
            Some('!') => {
                self.out.push('^');
                negated = true;
                end += 1;
            }
            Some('^') => {
                self.out.push_str("\\^");
                end += 1;
            }
            _ => {}
        }
        // The body starts after `[` or `[^`; a literal `\^` is content.
        let body = if negated { start + 2 } else { start + 1 };
        self.range_open = (start, body, negated);
        end
    }

    fn close_range(&mut self) {
        self.in_range = false;
        let (start, body, negated) = self.range_open;
        if self.out.len() == body {
            // JS: `[]` matches nothing, `[^]` any character.
            self.out.truncate(start);
            self.out.push_str(if negated { "[\\s\\S]" } else { NEVER });
            return;
        }
        self.out.push(']');
    }

    /// `[:name:]` inside a range; `None` if it is not one (then `[` is an
    /// ordinary character of the range).
    fn posix_class(&mut self, i: usize) -> Option<usize> {
        let mut k = i + 1;
        let mut name = String::new();
        while let Some(c) = self.at(k + 1).filter(|&c| c != ':') {
            name.push(c);
            k += 1;
        }
        if self.at(k + 1) != Some(':') || self.at(k + 2) != Some(']') {
            return None;
        }
        self.out.push_str(match name.as_str() {
            "alnum" => "\\dA-Za-z",
            "alpha" => "A-Za-z",
            "ascii" => "\\x00-\\x7F",
            "blank" => "\\t ",
            "cntrl" => "\\x00-\\x1F\\x7F",
            "digit" => "\\d",
            "graph" => "\\x21-\\x7E",
            "lower" => "a-z",
            "print" => "\\x20-\\x7E",
            "punct" => "!-/:-@\\[-`\\{-~",
            "space" => "\\s\\x0B",
            "upper" => "A-Z",
            "word" => "\\w",
            "xdigit" => "\\dA-Fa-f",
            _ => "",
        });
        Some(k + 2)
    }
}

/// A character that must match itself outside a class.
fn push_literal(out: &mut String, c: char) {
    if "\\.+*?()|[]{}^$".contains(c) {
        out.push('\\');
    }
    out.push(c);
}

/// An escaped character inside a class.
fn push_range_literal(out: &mut String, c: char) {
    if "\\]-[^&~".contains(c) {
        out.push('\\');
    }
    out.push(c);
}

/// An unescaped character inside a class: `-` stays a range operator, but
/// characters that open nested classes or set operations in Rust's syntax
/// (and are plain in JS) are escaped.
fn push_range_raw(out: &mut String, c: char) {
    if "[&~".contains(c) {
        out.push('\\');
    }
    out.push(c);
}

/// expandGlob's params, read once.
struct Expand<'a> {
    cwd: &'a Path,
    o: GlobOptions,
    exclude: Vec<Regex>,
    follow_symlinks: bool,
    canonicalize: bool,
}

/// std/fs `expandGlob`: the entries matching `glob`, sorted by path.
pub(crate) fn expand_glob(p: &ExpandGlobParams, cwd: &Path) -> Result<Vec<Entry>, ErrorObject> {
    let glob = p.glob.as_str();
    let o = GlobOptions {
        extended: p.extended,
        globstar: p.globstar,
        case_insensitive: p.case_insensitive,
    };
    let glob_is_absolute = glob.starts_with('/');
    let cwd_str = cwd.to_string_lossy();
    let root = p
        .root
        .as_deref()
        .unwrap_or(if glob_is_absolute { "/" } else { &cwd_str });
    let abs_root = if glob_is_absolute {
        root.to_string()
    } else {
        resolve_lexical(cwd, root)
    };
    let exclude = p
        .exclude
        .iter()
        .map(|ex| compile_glob(&resolve_lexical(cwd, &join_onto(&abs_root, ex)), o))
        .collect::<Result<Vec<_>, _>>()?;
    let x = Expand {
        cwd,
        o,
        exclude,
        follow_symlinks: p.follow_symlinks,
        canonicalize: p.canonicalize,
    };
    let mut matches = x.run(glob, glob_is_absolute, &abs_root)?;
    if glob.ends_with('/') {
        matches.retain(|e| e.is_dir);
    }
    if !p.include_dirs {
        matches.retain(|e| !e.is_dir);
    }
    Ok(matches)
}

/// `path` resolved onto `base` (std/path `resolve(base, path)` minus cwd).
fn join_onto(base: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{base}/{path}")
    }
}

impl Expand<'_> {
    fn run(&self, glob: &str, absolute: bool, abs_root: &str) -> Result<Vec<Entry>, ErrorObject> {
        let trimmed = glob.trim_matches('/');
        let mut segments: Vec<&str> = trimmed.split('/').filter(|s| !s.is_empty()).collect();
        if segments.is_empty() {
            segments.push("");
        }
        let mut fixed_root = if absolute {
            "/".to_string()
        } else {
            abs_root.to_string()
        };
        let first_glob = segments
            .iter()
            .position(|s| is_glob(s))
            .unwrap_or(segments.len());
        for seg in segments.drain(..first_glob) {
            fixed_root = join(&fixed_root, seg);
        }
        let root_entry = match create_walk_entry(&fixed_root, self.cwd) {
            Ok(entry) => entry,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&fixed_root, &e)),
        };
        let mut current = vec![root_entry];
        for seg in segments {
            // Keyed by path: several matches may lead to the same entry.
            let mut next: BTreeMap<String, Entry> = BTreeMap::new();
            for m in &current {
                for entry in self.advance(m, seg)? {
                    next.insert(entry.path.clone(), entry);
                }
            }
            current = next.into_values().collect();
        }
        Ok(current)
    }

    /// The entries one glob segment leads to from `from`.
    fn advance(&self, from: &Entry, seg: &str) -> Result<Vec<Entry>, ErrorObject> {
        if !from.is_dir {
            return Ok(Vec::new());
        }
        if seg == ".." {
            return self.parent(from);
        }
        let mut opts = WalkOptions {
            skip: self.exclude.clone(),
            follow_symlinks: self.follow_symlinks,
            ..WalkOptions::default()
        };
        if seg == "**" {
            opts.max_depth = if self.o.globstar { None } else { Some(1) };
            opts.canonicalize = self.canonicalize;
            return walk(&from.path, &opts, self.cwd);
        }
        opts.max_depth = Some(1);
        let pattern = compile_glob(seg, self.o)?;
        let mut out = Vec::new();
        for entry in walk(&from.path, &opts, self.cwd)? {
            if entry.path != from.path && is_match(&pattern, &entry.name)? {
                out.push(entry);
            }
        }
        Ok(out)
    }

    fn parent(&self, from: &Entry) -> Result<Vec<Entry>, ErrorObject> {
        let parent = join(&from.path, "..");
        for re in &self.exclude {
            if is_match(re, &parent)? {
                return Ok(Vec::new());
            }
        }
        match create_walk_entry(&parent, self.cwd) {
            Ok(entry) => Ok(vec![entry]),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_err(&parent, &e)),
        }
    }
}

fn io_err(path: &str, e: &io::Error) -> ErrorObject {
    super::ops::io_error("expandGlob", path, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    const O: GlobOptions = GlobOptions {
        extended: true,
        globstar: true,
        case_insensitive: false,
    };

    fn m(glob: &str, path: &str) -> bool {
        m_with(O, glob, path)
    }

    #[test]
    fn translates_like_std_path() {
        assert_eq!(glob_to_regex("*.rs", O), "^[^/]*\\.rs/*$");
        assert_eq!(glob_to_regex("/a/**/b", O), format!("^/+a/+{GLOBSTAR}b/*$"));
        assert!(m("**/*.rs", "src/a/b.rs"));
        assert!(m("**/*.rs", "b.rs"));
        assert!(!m("**/*.rs", "b.rsx"));
        assert!(m("*.{js,ts}", "a.ts"));
        assert!(!m("*.{js,ts}", "a.rs"));
        assert!(m("a?c", "abc"));
        assert!(m("[!a]x", "bx"));
        assert!(!m("[!a]x", "ax"));
        assert!(m("[[:digit:]]*", "7up"));
        assert!(m("+(ab)", "abab"));
        assert!(m("@(x|y).txt", "y.txt"));
        assert!(m("?(x).txt", ".txt"));
        assert!(m("!(foo)*", "bar.txt"));
        assert!(!m("!(foo)*", "foo.txt"));
        assert!(m("\\*lit", "*lit"));
        assert!(!m("\\*lit", "xlit"));
        // Unbalanced brackets: the segment is literal.
        assert!(m("a[b", "a[b"));
        assert!(m("x{y", "x{y"));
        assert!(!m("[]", "a"));
        // Characters special only in Rust's class syntax stay literal.
        assert!(m("[&~]x", "&x") && m("[&~]x", "~x"));
        assert!(m("[a\\-]x", "-x") && m("[\\]]x", "]x"));
        // `[^` is a literal caret in std/path, `[!` the negation.
        assert!(m("[^a]x", "^x") && m("[^a]x", "ax") && !m("[^a]x", "bx"));
        assert!(!m("", "a"));
    }

    fn m_with(o: GlobOptions, glob: &str, path: &str) -> bool {
        let re = compile_glob(glob, o).unwrap_or_else(|e| panic!("{glob}: {e:?}"));
        re.is_match(path).unwrap_or(false)
    }

    #[test]
    fn options_change_translation() {
        let no_ext = GlobOptions {
            extended: false,
            ..O
        };
        assert!(m_with(no_ext, "+(a)", "+(a)"));
        assert!(!m_with(no_ext, "+(a)", "aa"));
        let ci = GlobOptions {
            case_insensitive: true,
            ..O
        };
        assert!(m_with(ci, "*.TXT", "a.txt"));
        let no_star = GlobOptions {
            globstar: false,
            ..O
        };
        assert!(!m_with(no_star, "**/x", "a/b/x"));
        assert!(m_with(no_star, "**/x", "a/x"));
    }

    #[test]
    fn detects_globs() {
        for g in ["*.rs", "a?", "[ab]", "{a,b}", "!x", "+(a|b)", "@(a|b)"] {
            assert!(is_glob(g), "{g}");
        }
        for g in ["src", "a.b", "\\*x", "\\{a,b}", "", "a-b_c"] {
            assert!(!is_glob(g), "{g}");
        }
    }
}
