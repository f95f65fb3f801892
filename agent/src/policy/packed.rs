//! Many short strings in one allocation: a 100,000-rule policy would
//! otherwise spend an allocation (and its overhead) on each rule's summary.

/// Strings back to back; string `i` is `text[ends[i-1]..ends[i]]`.
#[derive(Clone, Debug, Default)]
pub struct Packed {
    text: String,
    ends: Vec<u32>,
}

impl Packed {
    pub fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.ends.push(self.text.len() as u32);
    }

    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)? as usize;
        let start = i.checked_sub(1).map_or(0, |j| self.ends[j] as usize);
        self.text.get(start..end)
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
        self.ends.shrink_to_fit();
    }
}

impl<'a> FromIterator<&'a str> for Packed {
    fn from_iter<I: IntoIterator<Item = &'a str>>(iter: I) -> Self {
        let mut p = Self::default();
        for s in iter {
            p.push(s);
        }
        p.shrink_to_fit();
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_come_back_by_index() {
        let p: Packed = ["a", "", "bcd"].into_iter().collect();
        assert_eq!(p.len(), 3);
        assert_eq!(p.get(0), Some("a"));
        assert_eq!(p.get(1), Some(""));
        assert_eq!(p.get(2), Some("bcd"));
        assert_eq!(p.get(3), None);
    }
}
