//! The subcommands other than `serve`.

pub mod admin;
pub mod bench;
pub mod check;
pub mod events;
pub mod keys;
pub mod migrate;
pub mod validate;

/// A descriptor given on the command line as `k=v,k2=v2`: its (key, value) pairs, in order.
/// Errors name the descriptor and the pair at fault.
pub(crate) fn descriptor_pairs(text: &str) -> anyhow::Result<Vec<(&str, &str)>> {
    let mut pairs = Vec::new();
    for pair in text.split(',') {
        let Some((key, value)) = pair.split_once('=') else {
            anyhow::bail!("descriptor '{text}': '{pair}' is not key=value");
        };
        if key.is_empty() {
            anyhow::bail!("descriptor '{text}': empty key in '{pair}'");
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}
