//! `#[workflow]`: parse and check the function, then generate its entry points and its
//! registration (with the steps its body calls and the fingerprint of its code).

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, ItemFn, LitStr, Path, Type};

use crate::args::{self, Errors};
use crate::signature::{self, type_string};
use crate::{calls, emit, fingerprint};

struct Workflow {
    krate: Path,
    name: LitStr,
    version: u32,
    timeout: Option<std::time::Duration>,
    retention: Option<std::time::Duration>,
    schedule: Option<Schedule>,
    on_event: Option<LitStr>,
    /// The context parameter's name, to find step calls.
    context: Option<Ident>,
    input: Type,
    output: Type,
    error: Type,
}

/// `schedule = "..."` and its options.
struct Schedule {
    pattern: LitStr,
    zone: Option<LitStr>,
    overlap: Option<String>,
    catch_up: Option<std::time::Duration>,
    jitter: Option<std::time::Duration>,
}

/// The options that only a scheduled workflow takes.
const SCHEDULE_OPTIONS: [&str; 4] = ["tz", "overlap", "catch_up", "jitter"];

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let function = match emit::parse_function(item, "workflow") {
        Ok(function) => function,
        Err(errors) => return errors,
    };
    match analyze(args, &function) {
        Ok(workflow) => generate(&workflow, function),
        Err(error) => emit::with_errors(function, error),
    }
}

fn analyze(args: TokenStream, function: &ItemFn) -> syn::Result<Workflow> {
    let mut errors = Errors::default();
    let mut name = None;
    let mut version = None;
    let mut krate = None;
    let mut timeout = None;
    let mut retention = None;
    let (mut pattern, mut zone, mut overlap, mut catch_up, mut jitter) = (None, None, None, None, None);
    let mut schedule_option = None;
    let mut on_event = None;
    for arg in args::parse(args, &mut errors) {
        match arg.key.to_string().as_str() {
            "name" => name = errors.push_result(arg.string()),
            "version" => version = errors.push_result(arg.u32()),
            "timeout" => timeout = errors.push_result(arg.duration()),
            "retention" => retention = errors.push_result(arg.duration()),
            "crate" => krate = errors.push_result(arg.crate_path()),
            "schedule" => pattern = errors.push_result(arg.string()),
            "on_event" => on_event = errors.push_result(arg.string()),
            key @ ("tz" | "overlap" | "catch_up" | "jitter") => {
                schedule_option.get_or_insert_with(|| arg.key.clone());
                match key {
                    "tz" => zone = errors.push_result(arg.string()),
                    "overlap" => overlap = errors.push_result(arg.choice(&["skip", "allow", "queue_one"])),
                    "catch_up" => catch_up = errors.push_result(arg.duration()),
                    _ => jitter = errors.push_result(arg.duration()),
                }
            }
            _ => errors.push(args::unknown(
                &arg,
                "workflow",
                &[
                    "name",
                    "version",
                    "timeout",
                    "retention",
                    "schedule",
                    "tz",
                    "overlap",
                    "catch_up",
                    "jitter",
                    "on_event",
                    "crate",
                ],
            )),
        }
    }
    if let (None, Some(option)) = (&pattern, &schedule_option) {
        errors.push(syn::Error::new(
            option.span(),
            format!(
                "`{option}` is an option of a scheduled workflow: add `schedule = \"0 * * * *\"` (the options: {})",
                SCHEDULE_OPTIONS.join(", ")
            ),
        ));
    }
    if let (Some(_), Some(event)) = (&pattern, &on_event) {
        errors.push(syn::Error::new(
            event.span(),
            "a workflow starts on a schedule or on an event, not both: write two workflows (one may call the other as a child)",
        ));
    }
    let schedule = pattern.map(|pattern| Schedule { pattern, zone, overlap, catch_up, jitter });

    let sig = &function.sig;
    signature::check_common(sig, "workflow", &mut errors);
    let inputs = signature::typed_inputs(sig);
    let usage = format!("`async fn {}(wf: &Workflow, input: Input) -> Result<Output, WorkflowError>`", sig.ident);
    let context = inputs.first().filter(|i| matches!(i.ty, Type::Reference(_)));
    if context.is_none() {
        let span = inputs.first().map_or_else(|| signature::inputs_span(sig), |i| i.ty.span());
        errors.push(syn::Error::new(
            span,
            format!("the first parameter of a #[workflow] fn is its context, `wf: &Workflow`: write {usage}"),
        ));
    }
    let input = match inputs.as_slice() {
        [_, input] if matches!(input.ty, Type::Reference(_)) => {
            errors.push(syn::Error::new_spanned(
                &input.ty,
                "the workflow input is taken by value (it is stored as JSON); use an owned type",
            ));
            None
        }
        [_, input] => Some(input.ty.clone()),
        [_, _, extra, ..] => {
            errors.push(syn::Error::new_spanned(
                &extra.pat,
                "a #[workflow] fn takes one input after its context; put several values in one struct",
            ));
            None
        }
        [_] if context.is_some() => {
            errors.push(syn::Error::new(
                signature::inputs_span(sig),
                format!("a #[workflow] fn takes one input after its context (use `_: ()` for none): write {usage}"),
            ));
            None
        }
        _ => None,
    };
    let result = errors.push_result(signature::result_type(sig, "Result<Output, WorkflowError>"));
    errors.finish()?;
    let (Some(input), Some(result)) = (input, result) else {
        unreachable!("missing parts were reported as errors above")
    };

    Ok(Workflow {
        krate: args::runtime_path(krate),
        name: name.unwrap_or_else(|| LitStr::new(&sig.ident.to_string(), sig.ident.span())),
        version: version.unwrap_or(0),
        timeout,
        retention,
        schedule,
        on_event,
        context: context.and_then(|c| signature::binding(&c.pat)).cloned(),
        input,
        output: result.ok,
        error: result.err,
    })
}

fn generate(workflow: &Workflow, function: ItemFn) -> TokenStream {
    let Workflow { krate, name, version, input, output, error, .. } = workflow;
    let optional = |duration: Option<std::time::Duration>| match duration {
        Some(duration) => {
            let duration = crate::duration::tokens(duration);
            quote!(#krate::__private::Some(#duration))
        }
        None => quote!(#krate::__private::None),
    };
    let (timeout, retention) = (optional(workflow.timeout), optional(workflow.retention));
    let schedule = match &workflow.schedule {
        None => quote!(#krate::__private::None),
        Some(Schedule { pattern, zone, overlap, catch_up, jitter }) => {
            let zone = zone.clone().unwrap_or_else(|| LitStr::new("UTC", pattern.span()));
            let overlap = match overlap.as_deref() {
                Some("allow") => quote!(Allow),
                Some("queue_one") => quote!(QueueOne),
                _ => quote!(Skip),
            };
            let (catch_up, jitter) = (optional(*catch_up), optional(*jitter));
            let ident = &function.sig.ident;
            quote!(#krate::__private::Some(#krate::__private::ScheduleSpec {
                pattern: #pattern,
                zone: #zone,
                overlap: #krate::__private::Overlap::#overlap,
                catch_up: #catch_up,
                jitter: #jitter,
                input: #krate::__private::tick_input::<#ident>,
            }))
        }
    };
    let private = quote!(#krate::__private);
    let (on_event, check_event) = match &workflow.on_event {
        Some(event) => {
            let ident = &function.sig.ident;
            (quote!(#private::Some(#event)), quote!(const _: () = #private::check_event_input::<#ident>();))
        }
        None => (quote!(#private::None), quote!()),
    };
    let ident = &function.sig.ident.clone();
    let span = emit::span_at(ident);
    let vis = &function.vis.clone();

    let fn_name = ident.to_string();
    let fingerprint = fingerprint::fingerprint(&function);
    let input_name = type_string(input);
    let output_name = type_string(output);
    let flow = calls::flow(&function.block, workflow.context.as_ref());
    let calls = calls::names(&flow);
    let flow_tokens = calls::tokens(&flow, &private);
    let location = emit::location(krate, ident);
    let err = emit::local_at("__wf_err", error);
    let convert_error = quote_spanned!(error.span()=> #private::workflow_error(#err));
    let call_body = quote_spanned! {span=>
        async move {
            match __wf_body(__wf_workflow, __wf_input).await {
                #private::Result::Ok(__wf_ok) => #private::Result::Ok(__wf_ok),
                #private::Result::Err(__wf_err) => #private::Result::Err(#convert_error),
            }
        }
    };
    let doc = format!(
        "Entry points of the workflow [`{fn_name}`](fn@{fn_name}): `run`, `run_with`, `start` and `start_with`."
    );

    // The user's function becomes the body the engine runs; under its name, a function that
    // runs the workflow as a child of the calling workflow.
    let ItemFn { attrs, sig, block, .. } = function;
    let lints = emit::lint_attributes(&attrs);
    let body_fn = {
        let mut sig = sig.clone();
        sig.ident = Ident::new("__wf_body", span);
        quote! {
            #(#lints)*
            #sig #block
        }
    };
    let child_call = quote_spanned! {span=>
        #(#attrs)*
        ///
        /// Called from another workflow's body, it runs as a child execution: see
        /// [`Workflow`](#krate::Workflow)'s documentation on child workflows.
        #vis fn #ident<'__wf>(
            __wf_workflow: &'__wf #krate::Workflow,
            __wf_input: #input,
        ) -> impl #private::Future<Output = #private::Result<#output, #krate::StepError>> + #private::Send + '__wf {
            #private::call_child::<#ident>(__wf_workflow, __wf_input)
        }
    };

    quote! {
        #child_call

        #[doc = #doc]
        #[allow(non_camel_case_types, dead_code)]
        #vis struct #ident {}

        const _: () = {
            #body_fn

            #[allow(dead_code)]
            impl #ident {
                /// Runs the workflow on `engine` and waits for its output.
                pub async fn run(
                    engine: &#krate::Engine,
                    input: #input,
                ) -> #private::Result<#output, #krate::RunError> {
                    engine.run_workflow::<#ident>(input, #krate::RunOptions::new()).await
                }

                /// Runs the workflow with options (such as a chosen execution id) and waits for its output.
                pub async fn run_with(
                    engine: &#krate::Engine,
                    input: #input,
                    options: #krate::RunOptions,
                ) -> #private::Result<#output, #krate::RunError> {
                    engine.run_workflow::<#ident>(input, options).await
                }

                /// Starts the workflow; the handle has the execution id and awaits the output.
                pub async fn start(
                    engine: &#krate::Engine,
                    input: #input,
                ) -> #private::Result<#krate::ExecutionHandle<#output>, #krate::RunError> {
                    engine.start_workflow::<#ident>(input, #krate::RunOptions::new()).await
                }

                /// Starts the workflow with options; the handle has the execution id and awaits the output.
                pub async fn start_with(
                    engine: &#krate::Engine,
                    input: #input,
                    options: #krate::RunOptions,
                ) -> #private::Result<#krate::ExecutionHandle<#output>, #krate::RunError> {
                    engine.start_workflow::<#ident>(input, options).await
                }

                /// The registered definition: name, source location, fingerprint, step calls.
                pub fn definition() -> &'static #private::WorkflowDefinition {
                    &__WF_DEFINITION
                }
            }

            impl #private::WorkflowFn for #ident {
                type Input = #input;
                type Output = #output;

                fn definition() -> &'static #private::WorkflowDefinition {
                    &__WF_DEFINITION
                }

                fn call(
                    __wf_workflow: &#krate::Workflow,
                    __wf_input: Self::Input,
                ) -> impl #private::Future<Output = #private::Result<Self::Output, #krate::WorkflowError>>
                       + #private::Send + '_ {
                    #call_body
                }
            }

            static __WF_DEFINITION: #private::WorkflowDefinition =
                #private::workflow_definition(#private::WorkflowParts {
                    name: #name,
                    fn_name: #fn_name,
                    location: #location,
                    fingerprint: #fingerprint,
                    version: #version,
                    input_type: #input_name,
                    output_type: #output_name,
                    calls: &[#(#calls),*],
                    flow: #flow_tokens,
                    entry: #private::erased_entry::<#ident>,
                    check_input: #private::check_input::<#ident>,
                    timeout: #timeout,
                    retention: #retention,
                    schedule: #schedule,
                    on_event: #on_event,
                });
            #check_event

            #private::inventory::submit! {
                #private::WorkflowRegistration(&__WF_DEFINITION)
            }
        };
    }
}
