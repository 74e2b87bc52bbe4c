//! Static check of overlay templates: every variable a template reads must exist in the context
//! it is rendered with on the Pi — firstboot's for static templates, the node's for live ones
//! (`piforge_config::overlay::{STATIC_VARS, LIVE_VARS, MEMBER_FIELDS}`) — on every branch, not
//! only the branches a sample render happens to take. Helpers must be ones the renderers have
//! (`HELPERS`); partials and decorators are refused (none are registered on the Pi).
//!
//! It walks the parsed handlebars template and tracks the context (`#each alive` makes a
//! member the context, `../` goes back up, block params, `@index`, `@root`). Tag *keys* are
//! not checked: tags are set at runtime too (`piforge-node tags set`). It does not evaluate
//! helpers, so `lookup` results and subexpressions are not followed further.

use handlebars::Path;
use handlebars::template::{BlockParam, HelperTemplate, Parameter, Template, TemplateElement};
use piforge_config::overlay::{HELPERS, LIVE_VARS, MEMBER_FIELDS, STATIC_VARS, VarKind};

/// What a template is rendered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Rendered once by firstboot ([`STATIC_VARS`]).
    Static,
    /// Rendered by the node on membership changes ([`LIVE_VARS`]).
    Live,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ty {
    Root(&'static [(&'static str, VarKind)]),
    Member,
    Members,
    Tags,
    Text,
    Number,
    /// Result of a helper: not followed.
    Any,
}

impl Ty {
    fn of(k: VarKind) -> Ty {
        match k {
            VarKind::Text => Ty::Text,
            VarKind::Number => Ty::Number,
            VarKind::Tags => Ty::Tags,
            VarKind::Members => Ty::Members,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Ty::Root(_) => "the template's context",
            Ty::Member => "a member",
            Ty::Members => "a member list",
            Ty::Tags => "tags",
            Ty::Text => "text",
            Ty::Number => "a number",
            Ty::Any => "a helper result",
        }
    }

    fn field(self, name: &str) -> Result<Ty, String> {
        let table = match self {
            Ty::Root(t) => t,
            Ty::Member => MEMBER_FIELDS,
            Ty::Members if name.bytes().all(|b| b.is_ascii_digit()) => return Ok(Ty::Member),
            Ty::Tags | Ty::Any => {
                return Ok(if self == Ty::Tags { Ty::Text } else { Ty::Any });
            }
            Ty::Members | Ty::Text | Ty::Number => {
                return Err(format!(
                    "`{name}`: {} has no field {name:?}",
                    self.describe()
                ));
            }
        };
        table
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, k)| Ty::of(*k))
            .ok_or_else(|| {
                let known: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown variable `{name}` ({} has: {})",
                    self.describe(),
                    known.join(", ")
                )
            })
    }
}

struct Scope {
    ty: Ty,
    /// Block params (`as |m i|`) bound here.
    params: Vec<(String, Ty)>,
    /// Inside `#each`: `@index`, `@first`, `@last` (and `@key` over tags).
    each: Option<Ty>,
}

struct Checker {
    stack: Vec<Scope>,
}

/// Checks `source` for the context it is rendered with. The error names the line and the
/// problem, e.g. ``line 3:5: unknown variable `nme` (a member has: name, ...)``.
pub fn check(source: &str, ctx: Context) -> Result<(), String> {
    let t = Template::compile(source).map_err(|e| e.to_string())?;
    let root = match ctx {
        Context::Static => Ty::Root(STATIC_VARS),
        Context::Live => Ty::Root(LIVE_VARS),
    };
    let mut c = Checker {
        stack: vec![Scope {
            ty: root,
            params: vec![],
            each: None,
        }],
    };
    c.template(&t)
}

fn raw_path(p: &Path) -> &str {
    match p {
        Path::Relative((_, raw)) => raw,
        Path::Local((_, _, raw)) => raw,
    }
}

fn param_name(p: &Parameter) -> Option<&str> {
    match p {
        Parameter::Name(n) => Some(n),
        Parameter::Path(p) => Some(raw_path(p)),
        _ => None,
    }
}

/// Splits `a.b/[c.d].e` into `a`, `b`, `c.d`, `e`.
fn segments(s: &str) -> Result<Vec<&str>, String> {
    let mut out = vec![];
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or_else(|| format!("`{s}`: unclosed '['"))?;
            out.push(&r[..end]);
            rest = &r[end + 1..];
        } else {
            let end = rest.find(['.', '/']).unwrap_or(rest.len());
            out.push(&rest[..end]);
            rest = &rest[end..];
        }
        rest = rest
            .strip_prefix('.')
            .or_else(|| rest.strip_prefix('/'))
            .unwrap_or(rest);
    }
    Ok(out)
}

impl Checker {
    fn template(&mut self, t: &Template) -> Result<(), String> {
        for (i, e) in t.elements.iter().enumerate() {
            self.element(e).map_err(|m| match t.mapping.get(i) {
                // Nested blocks already said where.
                Some(at) if !m.starts_with("line ") => format!("line {}:{}: {m}", at.0, at.1),
                _ => m,
            })?;
        }
        Ok(())
    }

    fn element(&mut self, e: &TemplateElement) -> Result<(), String> {
        match e {
            TemplateElement::RawString(_) | TemplateElement::Comment(_) => Ok(()),
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                self.expression(h).map(|_| ())
            }
            TemplateElement::HelperBlock(h) => self.block(h),
            _ => Err(
                "partials and decorators are not supported: the Pi's renderers register \
                      none"
                    .into(),
            ),
        }
    }

    /// `{{x}}` or `{{helper args}}`.
    fn expression(&mut self, h: &HelperTemplate) -> Result<Ty, String> {
        let plain = h.params.is_empty() && h.hash.is_empty();
        match &h.name {
            Parameter::Name(n) | Parameter::Path(Path::Relative((_, n))) if !plain => {
                self.call(n, h)
            }
            Parameter::Path(Path::Local((_, _, n))) if !plain => self.call(n, h),
            Parameter::Name(n) if HELPERS.contains(&n.as_str()) => self.call(n, h),
            p => self.value(p),
        }
    }

    fn value(&mut self, p: &Parameter) -> Result<Ty, String> {
        match p {
            Parameter::Name(n) => self.resolve(n),
            Parameter::Path(p) => self.resolve(raw_path(p)),
            Parameter::Subexpression(s) => match s.as_element() {
                TemplateElement::Expression(h) | TemplateElement::HelperBlock(h) => {
                    let n = param_name(&h.name).unwrap_or("").to_string();
                    self.call(&n, h)
                }
                _ => Err(format!("unsupported subexpression ({})", s.name())),
            },
            _ => Ok(Ty::Any),
        }
    }

    /// A helper call: the helper must exist and its arguments resolve.
    fn call(&mut self, name: &str, h: &HelperTemplate) -> Result<Ty, String> {
        if !HELPERS.contains(&name) {
            return Err(format!(
                "unknown helper or variable `{name}` (helpers: {})",
                HELPERS.join(", ")
            ));
        }
        for p in h.params.iter().chain(h.hash.values()) {
            self.value(p)?;
        }
        Ok(if name == "len" { Ty::Number } else { Ty::Any })
    }

    fn block(&mut self, h: &HelperTemplate) -> Result<(), String> {
        let Some(name) = param_name(&h.name).map(str::to_string) else {
            return Err("a block needs a helper name".into());
        };
        let arg = |c: &mut Checker| -> Result<Ty, String> {
            match h.params.first() {
                Some(p) => c.value(p),
                None => Err(format!("#{name} needs an argument")),
            }
        };
        match name.as_str() {
            "each" | "with" => {
                let ty = arg(self)?;
                for p in h.params.iter().skip(1).chain(h.hash.values()) {
                    self.value(p)?;
                }
                let (inner, key) = if name == "with" {
                    (ty, None)
                } else {
                    match ty {
                        Ty::Members => (Ty::Member, Some(Ty::Number)),
                        Ty::Tags => (Ty::Text, Some(Ty::Text)),
                        Ty::Any => (Ty::Any, Some(Ty::Any)),
                        other => {
                            return Err(format!(
                                "#each over {}: iterate members, alive or tags",
                                other.describe()
                            ));
                        }
                    }
                };
                let mut params = vec![];
                match &h.block_param {
                    Some(BlockParam::Single(p)) => {
                        params.extend(param_name(p).map(|n| (n.to_string(), inner)));
                    }
                    Some(BlockParam::Pair((v, k))) => {
                        params.extend(param_name(v).map(|n| (n.to_string(), inner)));
                        params
                            .extend(param_name(k).map(|n| (n.to_string(), key.unwrap_or(Ty::Any))));
                    }
                    _ => {}
                }
                self.stack.push(Scope {
                    ty: inner,
                    params,
                    each: key,
                });
                let r = h.template.as_ref().map_or(Ok(()), |t| self.template(t));
                self.stack.pop();
                r?;
            }
            "if" | "unless" => {
                arg(self)?;
                if let Some(t) = &h.template {
                    self.template(t)?;
                }
            }
            "raw" => return Ok(()),
            n if HELPERS.contains(&n) => {
                self.call(n, h)?;
                if let Some(t) = &h.template {
                    self.template(t)?;
                }
            }
            n => {
                return Err(format!(
                    "#{n}: not a helper (use #each to iterate, #if to test, #with to descend; \
                     helpers: {})",
                    HELPERS.join(", ")
                ));
            }
        }
        match &h.inverse {
            Some(t) => self.template(t),
            None => Ok(()),
        }
    }

    fn resolve(&self, raw: &str) -> Result<Ty, String> {
        let mut s = raw.trim();
        let mut level = 0;
        loop {
            if let Some(r) = s.strip_prefix("../") {
                level += 1;
                s = r;
            } else if let Some(r) = s.strip_prefix("./") {
                s = r;
            } else {
                break;
            }
        }
        let Some(at) = self.stack.len().checked_sub(1 + level) else {
            return Err(format!("`{raw}`: `../` goes above the template's context"));
        };
        if let Some(local) = s.strip_prefix('@') {
            let (head, tail) = match local.find(['.', '/']) {
                Some(i) => (&local[..i], &local[i + 1..]),
                None => (local, ""),
            };
            let ty = match head {
                "root" => self.stack[0].ty,
                "index" | "first" | "last" | "key" => {
                    let Some(key) = self.stack[at].each else {
                        return Err(format!("`{raw}` is only set inside #each"));
                    };
                    match head {
                        "index" => Ty::Number,
                        "key" => key,
                        _ => Ty::Any,
                    }
                }
                _ => return Err(format!("unknown local variable `{raw}`")),
            };
            return self.walk(ty, tail, raw);
        }
        if s.is_empty() || s == "." {
            return Ok(self.stack[at].ty);
        }
        let segs = segments(s)?;
        let first = segs.first().copied().unwrap_or("this");
        if level == 0 {
            for scope in self.stack.iter().rev() {
                if let Some((_, ty)) = scope.params.iter().find(|(n, _)| n == first) {
                    return self.fold(*ty, &segs[1..], raw);
                }
            }
        }
        let ty = self.stack[at].ty;
        if first == "this" {
            return self.fold(ty, &segs[1..], raw);
        }
        self.fold(ty, &segs, raw)
    }

    fn walk(&self, ty: Ty, tail: &str, raw: &str) -> Result<Ty, String> {
        self.fold(ty, &segments(tail)?, raw)
    }

    fn fold(&self, mut ty: Ty, segs: &[&str], raw: &str) -> Result<Ty, String> {
        for s in segs {
            ty = ty.field(s).map_err(|e| {
                if raw.contains('.') || raw.contains('/') {
                    format!("in `{raw}`: {e}")
                } else {
                    e
                }
            })?;
        }
        Ok(ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(src: &str, ctx: Context) {
        if let Err(e) = check(src, ctx) {
            panic!("{src:?}: {e}");
        }
    }

    fn bad(src: &str, ctx: Context) -> String {
        check(src, ctx).expect_err(src)
    }

    #[test]
    fn accepts_what_the_renderers_provide() {
        use Context::*;
        ok(
            "{{hostname}} {{cluster}} {{tags.role}} {{tags.[x-y]}}",
            Static,
        );
        ok(
            "{{#each alive}}{{name}} {{ip}}:{{port}} {{tags.role}}{{/each}}",
            Live,
        );
        ok(
            "{{#each members as |m i|}}{{m.name}}{{i}}{{@index}}{{#if @first}}x{{/if}}{{/each}}",
            Live,
        );
        ok(
            "{{#each alive}}{{#if (eq tags.role \"web\")}}{{name}}{{else}}{{../alive.0.name}}\
             {{/if}}{{/each}}",
            Live,
        );
        ok(
            "{{#each tags}}{{@key}}={{this}}{{/each}}{{len alive}}",
            Static,
        );
        ok(
            "{{#with alive.[0]}}{{addr}}{{/with}}{{#unless members}}none{{/unless}}",
            Live,
        );
        ok("{{#each alive}}{{@root.hostname}}{{/each}}", Static);
        ok(
            "{{lookup tags \"role\"}} {{! comment }}{{{hostname}}}",
            Static,
        );
        ok(
            "{{#each members}}{{#if (and (eq state \"alive\") (not (eq tags.role \"lb\")))}}\
             {{/if}}{{/each}}",
            Live,
        );
    }

    #[test]
    fn refuses_unknown_variables_on_every_branch() {
        use Context::*;
        // Live templates get no hostname (the node renders members only).
        let e = bad("backend\n{{hostname}}", Live);
        assert!(e.contains("line 2:1") && e.contains("`hostname`"), "{e}");
        // Inside a branch a sample render would never take (no members at build time).
        let e = bad(
            "{{#each alive}}{{#if (eq tags.role \"web\")}}{{nme}}{{/if}}{{/each}}",
            Live,
        );
        assert!(
            e.contains("unknown variable `nme`") && e.contains("a member has"),
            "{e}"
        );
        let e = bad("{{#if x}}{{else}}{{cluster.name}}{{/if}}", Static);
        assert!(e.contains("`x`"), "{e}");
        let e = bad("{{#if hostname}}{{else}}{{cluster.name}}{{/if}}", Static);
        assert!(e.contains("text has no field"), "{e}");
        assert!(bad("{{#each hostname}}{{/each}}", Static).contains("#each over text"));
        assert!(bad("{{@index}}", Static).contains("only set inside #each"));
        assert!(bad("{{../hostname}}", Static).contains("above"));
        assert!(bad("{{upper hostname}}", Static).contains("unknown helper"));
        assert!(bad("{{#members}}{{/members}}", Live).contains("not a helper"));
        assert!(bad("{{> header}}", Static).contains("partials"));
        assert!(bad("{{#each alive as |m|}}{{m.nope}}{{/each}}", Live).contains("`nope`"));
        let e = bad("a\n{{#each}}", Static);
        assert!(e.contains("syntax") && e.contains(":2:10"), "{e}");
    }
}
