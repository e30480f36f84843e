//! A test-only component that exports `acme:tools/greeter@1.0.0` instead of
//! the contract's `decoder`: a valid component, but not a plugin. The host
//! must refuse it at load, saying what it exports.

wit_bindgen::generate!({
    inline: r#"
        package acme:tools@1.0.0;
        interface greeter {
            greet: func(name: string) -> string;
        }
        world tool {
            export greeter;
        }
    "#,
    world: "acme:tools/tool",
});

/// Greets.
pub struct Greeter;

impl exports::acme::tools::greeter::Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello, {name}")
    }
}

#[cfg(target_arch = "wasm32")]
export!(Greeter);
