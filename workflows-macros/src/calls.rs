//! Finding the step calls in a workflow's body: calls `f(wf, ...)` whose first argument is the
//! workflow context, in source order, including inside macros such as `tokio::try_join!` — and
//! the control flow around them (branches, loops, parallel lanes, fan-outs) as far as the
//! syntax shows it, for the helper binary's `show`.

use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::visit::Visit;
use syn::{Block, Expr, ExprCall, ExprPath, Ident, Macro, Token};

/// The calls of a body and the control flow around them.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Flow {
    Call(String),
    /// One of the lanes runs (`if`/`else`, `match` arms); a lane may be empty.
    Branch(Vec<Vec<Flow>>),
    /// Runs any number of times (`for`, `while`, `loop`).
    Loop(Vec<Flow>),
    /// The lanes run concurrently (`join!`, `try_join!`, `select!`).
    Parallel(Vec<Vec<Flow>>),
    /// Runs once per item, concurrently (`wf.fan_out(items, limit, ..)`).
    FanOut(Vec<Flow>),
}

/// The control flow of the body's calls with `context` as first argument.
pub(crate) fn flow(block: &Block, context: Option<&Ident>) -> Vec<Flow> {
    let Some(context) = context else { return Vec::new() };
    let mut finder = Finder { context, lane: Vec::new() };
    finder.visit_block(block);
    finder.lane
}

/// The names of the called functions, in source order (without the context's own waits).
pub(crate) fn names(flow: &[Flow]) -> Vec<String> {
    let mut names = Vec::new();
    collect(flow, &mut names);
    names
}

fn collect(flow: &[Flow], names: &mut Vec<String>) {
    for node in flow {
        match node {
            Flow::Call(name) if name.starts_with('@') => {}
            Flow::Call(name) => names.push(name.clone()),
            Flow::Branch(lanes) | Flow::Parallel(lanes) => lanes.iter().for_each(|lane| collect(lane, names)),
            Flow::Loop(lane) | Flow::FanOut(lane) => collect(lane, names),
        }
    }
}

/// The flow as a `&[Flow]` constant expression of the runtime's type.
pub(crate) fn tokens(flow: &[Flow], private: &TokenStream) -> TokenStream {
    let nodes = flow.iter().map(|node| match node {
        Flow::Call(name) => quote!(#private::Flow::Call(#name)),
        Flow::Branch(lanes) => {
            let lanes = lanes.iter().map(|lane| tokens(lane, private));
            quote!(#private::Flow::Branch(&[#(#lanes),*]))
        }
        Flow::Parallel(lanes) => {
            let lanes = lanes.iter().map(|lane| tokens(lane, private));
            quote!(#private::Flow::Parallel(&[#(#lanes),*]))
        }
        Flow::Loop(lane) => {
            let lane = tokens(lane, private);
            quote!(#private::Flow::Loop(#lane))
        }
        Flow::FanOut(lane) => {
            let lane = tokens(lane, private);
            quote!(#private::Flow::FanOut(#lane))
        }
    });
    quote!(&[#(#nodes),*])
}

struct Finder<'a> {
    context: &'a Ident,
    /// The lane being filled.
    lane: Vec<Flow>,
}

impl Finder<'_> {
    /// The calls `visit` finds, as a lane of their own.
    fn lane(&mut self, visit: impl FnOnce(&mut Self)) -> Vec<Flow> {
        let outer = std::mem::take(&mut self.lane);
        visit(self);
        std::mem::replace(&mut self.lane, outer)
    }

    /// Adds `node` unless all its lanes are empty: control flow without calls is not shown.
    fn push_lanes(&mut self, lanes: Vec<Vec<Flow>>, node: fn(Vec<Vec<Flow>>) -> Flow) {
        if lanes.iter().any(|lane| !lane.is_empty()) {
            self.lane.push(node(lanes));
        }
    }

    fn push_lane(&mut self, lane: Vec<Flow>, node: fn(Vec<Flow>) -> Flow) {
        if !lane.is_empty() {
            self.lane.push(node(lane));
        }
    }

    fn is_context(&self, expr: &Expr) -> bool {
        matches!(expr, Expr::Path(ExprPath { path, .. }) if path.is_ident(self.context))
    }
}

impl<'ast> Visit<'ast> for Finder<'_> {
    fn visit_expr_call(&mut self, call: &'ast ExprCall) {
        // Arguments are evaluated before the call.
        for arg in &call.args {
            self.visit_expr(arg);
        }
        if let Expr::Path(ExprPath { path: callee, .. }) = &*call.func
            && call.args.first().is_some_and(|first| self.is_context(first))
            && let Some(name) = callee.segments.last()
        {
            self.lane.push(Flow::Call(name.ident.to_string()));
        } else {
            self.visit_expr(&call.func);
        }
    }

    fn visit_expr_if(&mut self, expr: &'ast syn::ExprIf) {
        self.visit_expr(&expr.cond);
        let then = self.lane(|f| f.visit_block(&expr.then_branch));
        let otherwise = match &expr.else_branch {
            Some((_, otherwise)) => self.lane(|f| f.visit_expr(otherwise)),
            None => Vec::new(),
        };
        self.push_lanes(vec![then, otherwise], Flow::Branch);
    }

    fn visit_expr_match(&mut self, expr: &'ast syn::ExprMatch) {
        self.visit_expr(&expr.expr);
        let arms = expr.arms.iter().map(|arm| self.lane(|f| f.visit_arm(arm))).collect();
        self.push_lanes(arms, Flow::Branch);
    }

    fn visit_expr_for_loop(&mut self, expr: &'ast syn::ExprForLoop) {
        self.visit_expr(&expr.expr);
        let body = self.lane(|f| f.visit_block(&expr.body));
        self.push_lane(body, Flow::Loop);
    }

    fn visit_expr_while(&mut self, expr: &'ast syn::ExprWhile) {
        // The condition runs on every iteration.
        let body = self.lane(|f| {
            f.visit_expr(&expr.cond);
            f.visit_block(&expr.body);
        });
        self.push_lane(body, Flow::Loop);
    }

    fn visit_expr_loop(&mut self, expr: &'ast syn::ExprLoop) {
        let body = self.lane(|f| f.visit_block(&expr.body));
        self.push_lane(body, Flow::Loop);
    }

    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        self.visit_expr(&call.receiver);
        if call.method == "fan_out" && self.is_context(&call.receiver) && call.args.len() == 3 {
            self.visit_expr(&call.args[0]);
            self.visit_expr(&call.args[1]);
            let each = self.lane(|f| f.visit_expr(&call.args[2]));
            self.push_lane(each, Flow::FanOut);
            return;
        }
        for arg in &call.args {
            self.visit_expr(arg);
        }
        // The context's durable waits are shown as `@sleep` and `@event:NAME`.
        if self.is_context(&call.receiver) {
            match call.method.to_string().as_str() {
                "sleep" | "sleep_until" => self.lane.push(Flow::Call("@sleep".to_owned())),
                "wait_for_event" => {
                    let name = match call.args.first() {
                        Some(Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(name), .. })) => name.value(),
                        _ => "?".to_owned(),
                    };
                    self.lane.push(Flow::Call(format!("@event:{name}")));
                }
                _ => {}
            }
        }
    }

    fn visit_macro(&mut self, mac: &'ast Macro) {
        // Macro bodies are opaque tokens; most macros that take steps (`join!`, `try_join!`,
        // `vec!`) take comma-separated expressions.
        let Ok(exprs) = Punctuated::<Expr, Token![,]>::parse_terminated.parse2(mac.tokens.clone()) else { return };
        let name = mac.path.segments.last().map(|s| s.ident.to_string()).unwrap_or_default();
        if matches!(name.as_str(), "join" | "try_join" | "select") {
            let lanes = exprs.iter().map(|expr| self.lane(|f| f.visit_expr(expr))).collect();
            self.push_lanes(lanes, Flow::Parallel);
        } else {
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

    fn parse(body: &str) -> Vec<Flow> {
        let block: Block = syn::parse_str(body).unwrap();
        let wf: Ident = syn::parse_str("wf").unwrap();
        flow(&block, Some(&wf))
    }

    fn call(name: &str) -> Flow {
        Flow::Call(name.to_owned())
    }

    #[test]
    fn finds_calls_in_order_including_macros_and_branches() {
        let flow = parse(
            r#"{
                let a = step_a(wf).await?;
                if a > 1 { steps::step_b(wf, a).await?; } else { helper(wf); }
                let (x, y) = tokio::try_join!(step_c(wf, 1), step_d(wf, 2))?;
                not_a_step(other, wf);
                for i in 0..3 { step_e(wf, i).await?; }
                Ok(x)
            }"#,
        );
        assert_eq!(names(&flow), ["step_a", "step_b", "helper", "step_c", "step_d", "step_e"]);
        assert_eq!(
            flow,
            [
                call("step_a"),
                Flow::Branch(vec![vec![call("step_b")], vec![call("helper")]]),
                Flow::Parallel(vec![vec![call("step_c")], vec![call("step_d")]]),
                Flow::Loop(vec![call("step_e")]),
            ]
        );
        let wf: Ident = syn::parse_str("wf").unwrap();
        assert!(flow_of_none(&wf));
    }

    fn flow_of_none(_: &Ident) -> bool {
        let block: Block = syn::parse_str("{ step_a(wf); }").unwrap();
        flow(&block, None).is_empty()
    }

    #[test]
    fn marks_matches_fan_outs_and_skips_flow_without_calls() {
        let flow = parse(
            r#"{
                if x { log(1); }
                match check(wf, 1).await? {
                    Some(v) => refund(wf, v).await?,
                    None => {}
                }
                let all = wf.fan_out(items(wf).await?, 4, |k| square(wf, k)).await?;
                while poll(wf).await? { wait(wf).await?; }
                wf.sleep(Duration::from_secs(1)).await;
                let paid: Paid = wf.wait_for_event("paid").await?;
                Ok(all)
            }"#,
        );
        assert_eq!(
            flow,
            [
                call("check"),
                Flow::Branch(vec![vec![call("refund")], vec![]]),
                call("items"),
                Flow::FanOut(vec![call("square")]),
                Flow::Loop(vec![call("poll"), call("wait")]),
                call("@sleep"),
                call("@event:paid"),
            ]
        );
    }

    #[test]
    fn arguments_are_called_before_the_call() {
        assert_eq!(names(&parse("{ outer(wf, inner(wf).await?).await }")), ["inner", "outer"]);
    }
}
