//! Finding the step calls in a workflow's body: calls `f(wf, ...)` whose first argument is the
//! workflow context, in source order, including inside macros such as `tokio::try_join!`.

use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::visit::{self, Visit};
use syn::{Block, Expr, ExprCall, ExprPath, Ident, Macro, Token};

/// The names of the functions the body calls with `context` as first argument, in order.
pub(crate) fn step_calls(block: &Block, context: Option<&Ident>) -> Vec<String> {
    let Some(context) = context else { return Vec::new() };
    let mut finder = Finder { context, calls: Vec::new() };
    finder.visit_block(block);
    finder.calls
}

struct Finder<'a> {
    context: &'a Ident,
    calls: Vec<String>,
}

impl<'ast> Visit<'ast> for Finder<'_> {
    fn visit_expr_call(&mut self, call: &'ast ExprCall) {
        if let (Expr::Path(ExprPath { path: callee, .. }), Some(Expr::Path(ExprPath { path: first, .. }))) =
            (&*call.func, call.args.first())
            && first.is_ident(self.context)
            && let Some(name) = callee.segments.last()
        {
            self.calls.push(name.ident.to_string());
        }
        visit::visit_expr_call(self, call);
    }

    fn visit_macro(&mut self, mac: &'ast Macro) {
        // Macro bodies are opaque tokens; most macros that take steps (`join!`, `try_join!`,
        // `vec!`) take comma-separated expressions.
        if let Ok(exprs) = Punctuated::<Expr, Token![,]>::parse_terminated.parse2(mac.tokens.clone()) {
            for expr in &exprs {
                self.visit_expr(expr);
            }
        }
    }

    // Nested items (fns, closures' inner items) are not part of this body.
    fn visit_item(&mut self, _: &'ast syn::Item) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_calls_in_order_including_macros_and_branches() {
        let block: Block = syn::parse_str(
            r#"{
                let a = step_a(wf).await?;
                if a > 1 { steps::step_b(wf, a).await?; } else { helper(wf); }
                let (x, y) = tokio::try_join!(step_c(wf, 1), step_d(wf, 2))?;
                not_a_step(other, wf);
                for i in 0..3 { step_e(wf, i).await?; }
                Ok(x)
            }"#,
        )
        .unwrap();
        let wf: Ident = syn::parse_str("wf").unwrap();
        assert_eq!(step_calls(&block, Some(&wf)), ["step_a", "step_b", "helper", "step_c", "step_d", "step_e"]);
        assert!(step_calls(&block, None).is_empty());
    }
}
