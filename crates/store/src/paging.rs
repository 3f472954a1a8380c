//! Opaque pagination tokens over in-memory result lists, shared by every service.

/// One page of a listing and the token for the next one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

/// A token for the page starting at `offset`.
pub fn encode_token(offset: usize) -> String {
    hex::encode(format!("o:{offset}"))
}

/// The offset a token names; `None` if it was not made by [`encode_token`].
pub fn decode_token(token: &str) -> Option<usize> {
    let raw = String::from_utf8(hex::decode(token).ok()?).ok()?;
    raw.strip_prefix("o:")?.parse().ok()
}

/// The page of at most `max` items that `token` (none: the first) starts; `None` when the
/// token is not valid for this list.
pub fn paginate<T>(items: Vec<T>, token: Option<&str>, max: usize) -> Option<Page<T>> {
    let start = match token {
        None => 0,
        Some(t) => decode_token(t).filter(|&o| o <= items.len())?,
    };
    let total = items.len();
    let end = start.saturating_add(max.max(1)).min(total);
    let items: Vec<T> = items.into_iter().skip(start).take(end - start).collect();
    Some(Page {
        items,
        next_token: (end < total).then(|| encode_token(end)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_walk_the_list() {
        let first = paginate((0..5).collect(), None, 2).unwrap();
        assert_eq!(first.items, vec![0, 1]);
        let second = paginate((0..5).collect::<Vec<_>>(), first.next_token.as_deref(), 2).unwrap();
        assert_eq!(second.items, vec![2, 3]);
        let last = paginate((0..5).collect::<Vec<_>>(), second.next_token.as_deref(), 2).unwrap();
        assert_eq!((last.items, last.next_token), (vec![4], None));
        assert!(paginate(vec![1], Some("zz"), 2).is_none());
        assert!(paginate(vec![1], Some(&encode_token(9)), 2).is_none());
    }
}
