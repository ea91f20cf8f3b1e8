//! What reads consult before redb: the keys committed since a checkpoint
//! began, and those a checkpoint running in the background is writing.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use crate::backend::ScanBounds;

/// Keys written since a checkpoint began: their value, or `None` if
/// deleted.
pub(super) type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// What reads consult before redb.
#[derive(Default)]
pub(super) struct Overlays {
    /// Written since the last checkpoint began.
    pub(super) active: Overlay,
    /// What a checkpoint running in the background is writing to redb;
    /// `active` wins over it. Dropped once redb durably holds it.
    pub(super) frozen: Option<Arc<Overlay>>,
}

/// The overlays' entries in a scan's bounds, in key order: the active
/// overlay's, and the frozen one's where the active has no entry.
pub(super) struct Changes<'a> {
    active: OverlayRange<'a>,
    frozen: Option<OverlayRange<'a>>,
}

/// An overlay's entries in a scan's bounds.
type OverlayRange<'a> =
    std::iter::Peekable<std::collections::btree_map::Range<'a, Vec<u8>, Option<Vec<u8>>>>;

impl<'a> Changes<'a> {
    pub(super) fn new(overlays: &'a Overlays, bounds: &'a ScanBounds<'_>) -> Self {
        let range = |o: &'a Overlay| {
            o.range::<[u8], (Bound<&[u8]>, Bound<&[u8]>)>(bounds.range())
                .peekable()
        };
        Self {
            active: range(&overlays.active),
            frozen: overlays.frozen.as_deref().map(range),
        }
    }
}

impl<'a> Iterator for Changes<'a> {
    type Item = (&'a Vec<u8>, &'a Option<Vec<u8>>);

    fn next(&mut self) -> Option<Self::Item> {
        let Some(frozen) = self.frozen.as_mut() else {
            return self.active.next();
        };
        match (self.active.peek(), frozen.peek()) {
            (Some((a, _)), Some((f, _))) if a == f => {
                frozen.next(); // the active overlay's entry is newer
                self.active.next()
            }
            (Some((a, _)), Some((f, _))) if f < a => frozen.next(),
            (Some(_), _) => self.active.next(),
            (None, _) => frozen.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::scan_bounds;

    fn overlay(entries: &[(&str, Option<&str>)]) -> Overlay {
        entries
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
            .collect()
    }

    /// Both overlays' keys in order, once each, the active overlay's entry
    /// (a deletion included) winning; only the active one without a frozen.
    #[test]
    fn changes_merge_the_active_overlay_over_the_frozen_one() {
        let overlays = Overlays {
            active: overlay(&[("b", Some("2")), ("c", None), ("e", Some("5"))]),
            frozen: Some(Arc::new(overlay(&[
                ("a", Some("1")),
                ("b", Some("old")),
                ("c", Some("old")),
                ("d", None),
                ("f", Some("6")),
            ]))),
        };
        let merged = |prefix: &[u8], after: Option<&[u8]>| -> Vec<(String, Option<String>)> {
            let bounds = scan_bounds(prefix, after).unwrap();
            Changes::new(&overlays, &bounds)
                .map(|(k, v)| {
                    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
                    (text(k), v.as_deref().map(text))
                })
                .collect()
        };
        let all = merged(b"", None);
        let want: Vec<(String, Option<String>)> = [
            ("a", Some("1")),
            ("b", Some("2")),
            ("c", None),
            ("d", None),
            ("e", Some("5")),
            ("f", Some("6")),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
        .collect();
        assert_eq!(all, want);
        assert_eq!(merged(b"", Some(b"c")), want[3..]);

        let active_only = Overlays {
            active: overlays.active.clone(),
            frozen: None,
        };
        let bounds = scan_bounds(b"", None).unwrap();
        assert_eq!(Changes::new(&active_only, &bounds).count(), 3);
    }
}
