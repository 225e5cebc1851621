//! `#[step]`: parse and check the function, then generate the step call, its registration and
//! its compensation hook.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ItemFn, LitStr, Path, Type, Visibility};

use crate::args::{self, Errors};
use crate::emit;
use crate::policy::StepPolicy;
use crate::signature::{self, Input};

/// Everything the expansion needs, checked.
struct Step {
    krate: Path,
    /// `crate = "..."` was given.
    custom_crate: bool,
    name: LitStr,
    compensate: Option<Path>,
    policy: StepPolicy,
    /// The body takes `&StepContext` first.
    takes_context: bool,
    inputs: Vec<Input>,
    output: Type,
    compensation: Type,
    returns_response: bool,
    /// `#[step(async)]`: completed from outside.
    is_async: bool,
    error: Type,
}

/// What is known of a step the macro rejected: enough to give its call the shape it would have
/// had, so that the only errors are the macro's, not "wrong number of arguments" at every call.
struct Rejected {
    error: syn::Error,
    krate: Path,
    inputs: Vec<Input>,
    /// `None` when the return type is what was wrong.
    output: Option<Type>,
    skips: bool,
}

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let function = match emit::parse_function(item, "step") {
        Ok(function) => function,
        Err(errors) => return errors,
    };
    match analyze(args, &function) {
        Ok(step) => generate(&step, function),
        Err(rejected) => call_shape(rejected, function),
    }
}

fn analyze(args: TokenStream, function: &ItemFn) -> Result<Step, Box<Rejected>> {
    let mut errors = Errors::default();
    let mut name = None;
    let mut compensate = None;
    let mut krate = None;
    let mut policy = StepPolicy::default();
    let mut is_async = false;
    for arg in args::parse(args, &mut errors) {
        match arg.key.to_string().as_str() {
            "name" => name = errors.push_result(arg.string()),
            "async" => match arg.value {
                args::Value::Flag => is_async = true,
                _ => errors.push(syn::Error::new_spanned(&arg.key, "write `#[step(async)]`, without a value")),
            },
            "compensate" => compensate = errors.push_result(arg.path()),
            "crate" => krate = errors.push_result(arg.crate_path()),
            _ if policy.take(&arg, &mut errors) => {}
            _ => {
                let mut valid = vec!["name", "compensate", "async"];
                valid.extend(StepPolicy::KEYS);
                valid.push("crate");
                errors.push(args::unknown(&arg, "step", &valid));
            }
        }
    }

    let sig = &function.sig;
    signature::check_common(sig, "step", &mut errors);
    let mut inputs = signature::typed_inputs(sig);
    let takes_context = inputs.first().is_some_and(|i| signature::is_step_context_ref(&i.ty));
    if takes_context {
        inputs.remove(0);
    }
    for input in &inputs {
        if signature::is_step_context_ref(&input.ty) {
            errors.push(syn::Error::new_spanned(&input.ty, "the `&StepContext` parameter must come first"));
        } else if signature::is_step_context_misused(&input.ty) {
            errors.push(syn::Error::new_spanned(
                &input.ty,
                "take the step context by shared reference: `ctx: &StepContext`",
            ));
        } else if let Type::Reference(_) = &input.ty {
            errors.push(syn::Error::new_spanned(
                &input.ty,
                "step inputs are taken by value (they are hashed into the journal and kept for retries); \
                 use an owned type, such as `String` for `&str`",
            ));
        } else if let Type::ImplTrait(_) = &input.ty {
            errors
                .push(syn::Error::new_spanned(&input.ty, "step inputs must be concrete serde types, not `impl Trait`"));
        }
    }

    let expected =
        if is_async { "Result<Completion<T>, E>" } else { "Result<T, E>` or `Result<StepResponse<T, C>, E>" };
    let result = errors.push_result(signature::result_type(sig, expected));
    let outputs = result.as_ref().and_then(|result| errors.push_result(outputs(&result.ok, is_async)));
    if let Some(name) = &name {
        let value = name.value();
        if value.starts_with('@') || value.contains('/') {
            errors.push(syn::Error::new_spanned(
                name,
                "step names must not start with `@` or contain `/`: the engine uses them in timer, event and \
                 child keys and in completion tokens",
            ));
        }
    }
    let custom_crate = krate.is_some();
    let krate = args::runtime_path(krate);
    if let Err(error) = errors.finish() {
        let output = outputs.map(|outputs| outputs.output);
        return Err(Box::new(Rejected { error, krate, inputs, output, skips: policy.skips() }));
    }
    let (Some(result), Some(Outputs { output, compensation, returns_response })) = (result, outputs) else {
        unreachable!("a missing result type was reported above")
    };
    let name = name.unwrap_or_else(|| LitStr::new(&sig.ident.to_string(), sig.ident.span()));
    Ok(Step {
        krate,
        custom_crate,
        name,
        compensate,
        policy,
        takes_context,
        inputs,
        output,
        compensation,
        returns_response,
        is_async,
        error: result.err,
    })
}

/// The types a step's `Ok` type gives: its output and its compensation's input.
struct Outputs {
    output: Type,
    /// The same tokens as `output` unless the step returns `StepResponse<T, C>`.
    compensation: Type,
    /// The body returns `StepResponse` or `Completion`, not the bare output.
    returns_response: bool,
}

fn outputs(ok: &Type, is_async: bool) -> syn::Result<Outputs> {
    let (output, compensation, returns_response) = match (is_async, signature::completion(ok)) {
        (true, Some(output)) => (output.clone(), output, true),
        (true, None) => {
            return Err(syn::Error::new_spanned(
                ok,
                "an async step returns `Result<Completion<T>, E>`: `Ok(Completion::later())` once it sent its \
                 request (the output `T` is delivered with `engine.complete_step`), or `Ok(Completion::now(output))`",
            ));
        }
        (false, Some(_)) => {
            return Err(syn::Error::new_spanned(
                ok,
                "a step that returns `Completion<T>` is completed from outside: mark it `#[step(async)]`",
            ));
        }
        (false, None) => match signature::step_response(ok) {
            Some((output, compensation)) => (output, compensation, true),
            None => (ok.clone(), ok.clone(), false),
        },
    };
    Ok(Outputs { output, compensation, returns_response })
}

/// The parameter names of the generated call: the user's where they are plain bindings.
fn argument_names(inputs: &[Input]) -> Vec<Ident> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, input)| match signature::binding(&input.pat) {
            Some(binding) => format_ident!("{}", binding),
            None => format_ident!("__wf_arg{}", i),
        })
        .collect()
}

/// On error: the errors, and a function with the step call's signature (`name(wf, inputs..)`
/// returning the future of its output) whose body never runs, so that the crate's calls of the
/// step type-check and the errors shown are the macro's. The function as written is kept
/// inside, when it is an `async fn`, so that errors in its body are reported too.
fn call_shape(rejected: Box<Rejected>, function: ItemFn) -> TokenStream {
    let Rejected { error, krate, inputs, output, skips } = *rejected;
    let private = quote!(#krate::__private);
    let ItemFn { attrs, vis, sig, block, .. } = function;
    let ident = &sig.ident;
    let arg_names = argument_names(&inputs);
    let arg_types = inputs.iter().map(|i| &i.ty);
    // An unknown output becomes a type parameter the call sites infer.
    let (generic, output) = match output {
        Some(output) => (None, quote!(#output)),
        None => (Some(quote!(__WfOutput: '__wf,)), quote!(__WfOutput)),
    };
    let returned = if skips { quote!(#private::Option<#output>) } else { output };
    let body = (sig.asyncness.is_some() && sig.receiver().is_none()).then(|| {
        let mut sig = sig.clone();
        sig.ident = Ident::new("__wf_body", emit::span_at(&sig.ident));
        quote!(#[allow(dead_code, clippy::needless_lifetimes)] #sig #block)
    });
    let errors = error.to_compile_error();
    quote! {
        #errors
        #(#attrs)*
        #[allow(unused_variables)]
        #vis fn #ident<'__wf, #generic>(
            __wf_workflow: &'__wf #krate::Workflow,
            #(#arg_names: #arg_types),*
        ) -> impl #private::Future<Output = #private::Result<#returned, #krate::StepError>> + #private::Send + '__wf {
            #body
            ::core::future::pending()
        }
    }
}

fn generate(step: &Step, function: ItemFn) -> TokenStream {
    let Step { krate, name, output, compensation, error, .. } = step;
    let private = quote!(#krate::__private);
    let ItemFn { attrs, vis, sig, block, .. } = function;
    let ident = &sig.ident;
    let span = emit::span_at(ident);

    let arg_names = argument_names(&step.inputs);
    let arg_types: Vec<&Type> = step.inputs.iter().map(|i| &i.ty).collect();
    // The type the step is to the runtime, named after the function so that errors say which
    // step they are about. It is declared in a module of its own: declared beside the body, its
    // name would shadow a module or type of the same name that the user's code refers to.
    let step_type = quote!(__wf_step::#ident);
    // What the runtime needs of each type, stated at the user's tokens (see `__private::StepInput`).
    let bound = |ty: &Type, requirement: &str| {
        let requirement = Ident::new(requirement, Span::call_site());
        let bound = emit::located_at(quote!(::__private::#requirement<#step_type>), ty.span());
        // A path given with `crate = "..."` keeps its spans: when it names no crate, that is
        // reported once, at the option.
        let krate = if step.custom_crate { quote!(#krate) } else { emit::located_at(quote!(#krate), ty.span()) };
        quote!(#ty: #krate #bound)
    };
    let mut bounds: Vec<TokenStream> = arg_types.iter().map(|ty| bound(ty, "StepInput")).collect();
    bounds.push(bound(output, "StepOutput"));
    if signature::type_string(compensation) != signature::type_string(output) {
        bounds.push(bound(compensation, "CompensationInput"));
    }

    // The original function, renamed, becomes the body the step runs.
    let lints = emit::lint_attributes(&attrs);
    let body_fn = {
        let mut sig = sig.clone();
        sig.ident = Ident::new("__wf_body", span);
        quote! {
            #(#lints)*
            #[allow(clippy::needless_lifetimes)]
            #sig #block
        }
    };
    let context_arg = step.takes_context.then(|| quote!(__wf_ctx,));
    let ok = if step.returns_response {
        quote!(#private::Outcome::from(__wf_ok))
    } else {
        quote!(#private::Outcome::Done(#krate::StepResponse::new(__wf_ok)))
    };
    // The user's spans (so type errors point at their code) with locals interpolated from
    // call-site idents (so they resolve even when the user's tokens came from `macro_rules!`).
    let err = emit::local_at("__wf_err", error);
    let convert_error = quote_spanned!(error.span()=> #private::step_error(#err));

    let compensate_fn = step.compensate.as_ref().map(|path| {
        let (ctx, input) = (emit::local_at("__wf_ctx", path), emit::local_at("__wf_input", path));
        // The input goes through `CompensationTakes`, whose error names the step and the
        // compensation when the compensation takes another type; the marker type carries the
        // compensation's name into that message.
        let marker = &path.segments.last().expect("a path has a segment").ident;
        let take = quote_spanned! {emit::span_at(path)=>
            <_ as #private::CompensationTakes<#step_type, __wf_compensation::#marker, Self::Compensation>>::take(#input)
        };
        let call = quote_spanned!(path.span()=> #path(#ctx, #take));
        quote! {
            fn compensate(
                __wf_ctx: &#krate::StepContext,
                __wf_input: Self::Compensation,
            ) -> impl #private::Future<Output = #private::Result<(), #krate::StepError>> + #private::Send + '_ {
                mod __wf_compensation {
                    #[allow(non_camel_case_types, dead_code)]
                    pub(super) struct #marker {}
                }
                async move {
                    match #call.await {
                        #private::Result::Ok(()) => #private::Result::Ok(()),
                        #private::Result::Err(__wf_err) => #private::Result::Err(#private::step_error(__wf_err)),
                    }
                }
            }
        }
    });
    let compensation_definition = match &step.compensate {
        Some(path) => {
            let path_name = crate::signature::type_string(path);
            quote! {
                #private::Some((#path_name, #private::compensation_hook::<#step_type>))
            }
        }
        None => quote!(#private::None),
    };
    let fn_name = ident.to_string();
    let location = emit::location(krate, ident);
    let policy = step.policy.tokens(&private);
    // A step that may be skipped returns `None` when it was.
    let (returned, call) = if step.policy.skips() {
        (quote!(#private::Option<#output>), quote!(#private::call_step_or_skip))
    } else {
        (quote!(#output), quote!(#private::call_step))
    };
    let call_body = quote_spanned! {span=>
        async move {
            match __wf_body(#context_arg #(#arg_names),*).await {
                #private::Result::Ok(__wf_ok) => #private::Result::Ok(#ok),
                #private::Result::Err(__wf_err) => #private::Result::Err(#convert_error),
            }
        }
    };
    let visibility: &Visibility = &vis;
    let check_output = if step.is_async {
        quote!(#private::Some(#private::check_output::<#step_type>))
    } else {
        quote!(#private::None)
    };

    quote! {
        #(#attrs)*
        #visibility fn #ident<'__wf>(
            __wf_workflow: &'__wf #krate::Workflow,
            #(#arg_names: #arg_types),*
        ) -> impl #private::Future<Output = #private::Result<#returned, #krate::StepError>>
               + #private::Send
               + #private::StepCall<Input = (#(#arg_types,)*), Output = #output, Compensation = #compensation>
               + '__wf {
            #body_fn

            mod __wf_step {
                #[allow(non_camel_case_types, dead_code)]
                pub(super) struct #ident {}
            }

            // Not recommended: an unmet bound is reported at the bound (the user's type), not
            // as a consequence of this impl.
            #[diagnostic::do_not_recommend]
            impl #private::StepFn for #step_type where #(#bounds),* {
                type Input = (#(#arg_types,)*);
                type Output = #output;
                type Compensation = #compensation;

                fn definition() -> &'static #private::StepDefinition {
                    &__WF_DEFINITION
                }

                #[allow(unused_variables)]
                fn call(
                    __wf_ctx: &#krate::StepContext,
                    __wf_input: Self::Input,
                ) -> impl #private::Future<
                    Output = #private::Result<#private::Outcome<#output, #compensation>, #krate::StepError>,
                > + #private::Send + '_ {
                    let (#(#arg_names,)*) = __wf_input;
                    #call_body
                }

                #compensate_fn
            }

            static __WF_DEFINITION: #private::StepDefinition = #private::step_definition(#private::StepParts {
                name: #name,
                fn_name: #fn_name,
                location: #location,
                compensation: #compensation_definition,
                policy: #policy,
                check_output: #check_output,
            });

            #private::inventory::submit! {
                #private::StepRegistration(&__WF_DEFINITION)
            }

            #call::<#step_type>(__wf_workflow, (#(#arg_names,)*))
        }
    }
}
