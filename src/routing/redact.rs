// TEMPORARY stub until the helper's version lands.
use super::pii::{Finding, PiiClass};
use std::sync::Arc;
#[derive(Debug, Default)]
pub struct Redactions { v: Vec<(PiiClass, String, String)> }
impl Redactions {
    pub fn new() -> Self { Self::default() }
    pub fn redact(&mut self, text: &str, findings: &[Finding]) -> String {
        let mut out = String::new(); let mut at = 0;
        for f in findings { out.push_str(&text[at..f.range.start]); let orig = &text[f.range.clone()];
            let ph = match self.v.iter().find(|(_, o, _)| o == orig) { Some((_, _, p)) => p.clone(), None => { let n = self.v.iter().filter(|(c,_,_)| *c == f.class).count()+1; let p = format!("[{}_{}]", f.class.tag(), n); self.v.push((f.class.clone(), orig.to_owned(), p.clone())); p } };
            out.push_str(&ph); at = f.range.end; }
        out.push_str(&text[at..]); out }
    pub fn is_empty(&self) -> bool { self.v.is_empty() }
    pub fn classes(&self) -> Vec<PiiClass> { self.v.iter().map(|x| x.0.clone()).collect() }
    pub fn restore(&self, text: &str) -> String { let mut t = text.to_owned(); for (_, o, p) in &self.v { t = t.replace(p, o); } t }
}
pub struct Restorer { r: Arc<Redactions>, held: String }
impl Restorer {
    pub fn new(r: Arc<Redactions>) -> Self { Restorer { r, held: String::new() } }
    pub fn push(&mut self, piece: &str) -> String { self.held.push_str(piece); if let Some(i) = self.held.rfind('[') { if !self.held[i..].contains(']') { let rest = self.held.split_off(i); let out = self.r.restore(&self.held); self.held = rest; return out; } } let out = self.r.restore(&self.held); self.held.clear(); out }
    pub fn finish(&mut self) -> String { let out = self.r.restore(&self.held); self.held.clear(); out }
}
