//! Topic matching with a word trie: one walk per publish, whatever the number
//! of bindings. `*` matches exactly one word, `#` zero or more, words are
//! separated by `.` (RabbitMQ semantics; empty words are words).

use std::collections::HashMap;
use std::hash::Hash;

/// A trie from binding patterns to destinations of type `D`.
#[derive(Debug)]
pub struct TopicTrie<D> {
    root: Node<D>,
    len: usize,
}

#[derive(Debug)]
struct Node<D> {
    words: Children<D>,
    star: Option<Box<Self>>,
    hash: Option<Box<Self>>,
    /// Destinations whose pattern ends here.
    dests: Vec<D>,
}

impl<D> Default for Node<D> {
    fn default() -> Self {
        Self {
            words: Children::Few(Vec::new()),
            star: None,
            hash: None,
            dests: Vec::new(),
        }
    }
}

/// Children above which a node keeps its words in a hash map.
const FEW_CHILDREN: usize = 8;

/// A node's children by word. Most nodes have one or two (a device's own
/// topic level under a shared prefix): a short vector costs one entry per
/// child, where a hash map allocates several buckets for the first.
#[derive(Debug)]
enum Children<D> {
    Few(Vec<(Box<str>, Node<D>)>),
    Many(HashMap<Box<str>, Node<D>>),
}

impl<D> Children<D> {
    fn get(&self, word: &str) -> Option<&Node<D>> {
        match self {
            Self::Few(v) => v.iter().find(|(w, _)| &**w == word).map(|(_, n)| n),
            Self::Many(m) => m.get(word),
        }
    }

    fn get_mut(&mut self, word: &str) -> Option<&mut Node<D>> {
        match self {
            Self::Few(v) => v.iter_mut().find(|(w, _)| &**w == word).map(|(_, n)| n),
            Self::Many(m) => m.get_mut(word),
        }
    }

    fn get_or_insert(&mut self, word: &str) -> &mut Node<D> {
        if let Self::Few(v) = self
            && v.len() >= FEW_CHILDREN
            && !v.iter().any(|(w, _)| &**w == word)
        {
            *self = Self::Many(std::mem::take(v).into_iter().collect());
        }
        match self {
            Self::Few(v) => {
                let i = match v.iter().position(|(w, _)| &**w == word) {
                    Some(i) => i,
                    None => {
                        // One more, not four: most nodes keep one child.
                        v.reserve_exact(1);
                        v.push((word.into(), Node::default()));
                        v.len() - 1
                    }
                };
                &mut v[i].1
            }
            Self::Many(m) => m.entry(word.into()).or_default(),
        }
    }

    fn remove(&mut self, word: &str) {
        match self {
            Self::Few(v) => {
                v.retain(|(w, _)| &**w != word);
                if v.is_empty() {
                    // Give the allocation back: churn leaves nothing behind.
                    *v = Vec::new();
                }
            }
            Self::Many(m) => {
                m.remove(word);
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Self::Few(v) => v.is_empty(),
            Self::Many(m) => m.is_empty(),
        }
    }
}

impl<D> Node<D> {
    fn is_empty(&self) -> bool {
        self.dests.is_empty() && self.words.is_empty() && self.star.is_none() && self.hash.is_none()
    }
}

impl<D> Default for TopicTrie<D> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<D: Clone + Eq + Hash> TopicTrie<D> {
    /// Number of (pattern, destination) pairs held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no binding is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Add `dest` under `pattern`; returns false if it was already there.
    pub fn insert(&mut self, pattern: &str, dest: D) -> bool {
        let mut node = &mut self.root;
        for word in pattern.split('.') {
            node = match word {
                "*" => node.star.get_or_insert_with(Box::default),
                "#" => node.hash.get_or_insert_with(Box::default),
                w => node.words.get_or_insert(w),
            };
        }
        if node.dests.contains(&dest) {
            return false;
        }
        // Most patterns have one destination or a few: grow one at a time
        // while few (many then double as usual).
        if node.dests.len() < 4 {
            node.dests.reserve_exact(1);
        }
        node.dests.push(dest);
        self.len += 1;
        true
    }

    /// Remove `dest` under `pattern`; returns whether it was there. Empty
    /// branches are pruned so churn does not leak nodes.
    pub fn remove(&mut self, pattern: &str, dest: &D) -> bool {
        let words: Vec<&str> = pattern.split('.').collect();
        let removed = remove_at(&mut self.root, &words, dest);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Call `f` for each destination whose pattern matches `key`. A
    /// destination bound by several matching patterns is reported once per
    /// pattern; callers deduplicate.
    pub fn for_each_match(&self, key: &str, mut f: impl FnMut(&D)) {
        let words: Vec<&str> = key.split('.').collect();
        walk(&self.root, &words, &mut f);
    }
}

fn remove_at<D: Eq>(node: &mut Node<D>, words: &[&str], dest: &D) -> bool {
    let Some((first, rest)) = words.split_first() else {
        let before = node.dests.len();
        node.dests.retain(|d| d != dest);
        return node.dests.len() != before;
    };
    match *first {
        "*" | "#" => {
            let slot = if *first == "*" {
                &mut node.star
            } else {
                &mut node.hash
            };
            let Some(child) = slot.as_deref_mut() else {
                return false;
            };
            let removed = remove_at(child, rest, dest);
            if child.is_empty() {
                *slot = None;
            }
            removed
        }
        w => {
            let Some(child) = node.words.get_mut(w) else {
                return false;
            };
            let removed = remove_at(child, rest, dest);
            if child.is_empty() {
                node.words.remove(w);
            }
            removed
        }
    }
}

fn walk<D>(node: &Node<D>, words: &[&str], f: &mut impl FnMut(&D)) {
    if let Some(hash) = &node.hash {
        // `#` swallows zero, one, ... or all remaining words.
        for skip in 0..=words.len() {
            walk(hash, &words[skip..], f);
        }
    }
    let Some((first, rest)) = words.split_first() else {
        node.dests.iter().for_each(f);
        return;
    };
    if let Some(child) = node.words.get(first) {
        walk(child, rest, f);
    }
    if let Some(star) = &node.star {
        walk(star, rest, f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, key: &str) -> bool {
        let mut t = TopicTrie::default();
        t.insert(pattern, 1u8);
        let mut hit = false;
        t.for_each_match(key, |_| hit = true);
        hit
    }

    #[test]
    fn rabbitmq_topic_cases() {
        let cases = [
            ("a.b.c", "a.b.c", true),
            ("a.*.c", "a.b.c", true),
            ("a.*.c", "a.c", false),
            ("a.#", "a", true),
            ("a.#", "a.b.c", true),
            ("#", "", true),
            ("#", "a.b", true),
            ("#.c", "c", true),
            ("#.c", "a.b.c", true),
            ("#.c", "a.b.d", false),
            ("a.#.c", "a.c", true),
            ("a.#.c", "a.x.y.c", true),
            ("*", "", true),
            ("*", "a.b", false),
            ("*.*", "a.", true),
            ("a.*.#", "a", false),
            ("a.*.#", "a.b", true),
            ("#.#", "a", true),
            ("b.c", "a.b.c", false),
            ("", "", true),
            ("", "a", false),
        ];
        for (pattern, key, want) in cases {
            assert_eq!(
                matches(pattern, key),
                want,
                "pattern {pattern:?} key {key:?}"
            );
        }
    }

    #[test]
    fn insert_remove_prunes() {
        let mut t = TopicTrie::default();
        assert!(t.insert("a.*.#", 1));
        assert!(!t.insert("a.*.#", 1));
        assert!(t.insert("a.*.#", 2));
        assert_eq!(t.len(), 2);
        assert!(t.remove("a.*.#", &1));
        assert!(!t.remove("a.*.#", &1));
        assert!(t.remove("a.*.#", &2));
        assert!(t.root.is_empty());
        assert!(t.is_empty());
    }

    #[test]
    fn many_children_switch_to_a_map_and_back_to_nothing() {
        let mut t = TopicTrie::default();
        let n = FEW_CHILDREN * 3;
        for i in 0..n {
            assert!(t.insert(&format!("dev.{i}.cmd"), i));
        }
        assert!(matches!(
            t.root.words.get("dev").map(|d| &d.words),
            Some(Children::Many(_))
        ));
        for i in 0..n {
            let mut hits = Vec::new();
            t.for_each_match(&format!("dev.{i}.cmd"), |d| hits.push(*d));
            assert_eq!(hits, vec![i]);
        }
        let mut all = Vec::new();
        t.for_each_match("dev.3.cmd", |d| all.push(*d));
        assert_eq!(all, vec![3]);
        for i in 0..n {
            assert!(t.remove(&format!("dev.{i}.cmd"), &i));
        }
        assert!(t.is_empty() && t.root.is_empty());
    }
}
