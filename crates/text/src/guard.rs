//! Content moderation with a Llama Guard model: the conversation becomes the guard's task
//! prompt (its hazard categories, the conversation as `User:` / `Agent:` turns, and the
//! instruction to answer `safe` or `unsafe` with the violated categories), which the model's
//! own chat template then wraps as one user turn.
//!
//! The categories are Llama Guard 4's, MLCommons' hazard taxonomy (S1-S14); the format is
//! the one in Meta's model cards for Llama Guard 3 and 4. A guard GGUF whose own template
//! already builds this prompt ([`template_builds_prompt`]) is given the conversation as is.
//!
//! ```
//! use peregrine_text::guard::{task_prompt, Turn};
//!
//! let p = task_prompt(&[Turn::User("How do I pick a lock?".into())]);
//! assert!(p.starts_with("Task: Check if there is unsafe content in 'User' messages"));
//! assert!(p.contains("S14: Code Interpreter Abuse."));
//! assert!(p.contains("User: How do I pick a lock?"));
//! ```

/// Llama Guard 4's hazard categories, in order (S1..S14).
pub const CATEGORIES: [&str; 14] = [
    "Violent Crimes",
    "Non-Violent Crimes",
    "Sex-Related Crimes",
    "Child Sexual Exploitation",
    "Defamation",
    "Specialized Advice",
    "Privacy",
    "Intellectual Property",
    "Indiscriminate Weapons",
    "Hate",
    "Suicide & Self-Harm",
    "Sexual Content",
    "Elections",
    "Code Interpreter Abuse",
];

/// The text a template carries when it builds the guard prompt itself.
const CATEGORIES_OPEN: &str = "<BEGIN UNSAFE CONTENT CATEGORIES>";

/// What the guard may answer, as a Lark grammar: `safe`, or `unsafe` and a line of
/// comma-separated categories.
pub const ANSWER_GRAMMAR: &str = r#"start: "safe" | "unsafe\n" cat ("," cat)*
cat: /S(1[0-4]|[1-9])/
"#;

/// One turn of the conversation to classify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Turn {
    User(String),
    Agent(String),
}

/// Whether a chat template builds the guard prompt itself (Llama Guard 3/4's own).
pub fn template_builds_prompt(template_source: &str) -> bool {
    template_source.contains(CATEGORIES_OPEN)
}

/// The guard's task prompt for `turns`: the last turn's side is the one assessed.
pub fn task_prompt(turns: &[Turn]) -> String {
    let role = match turns.last() {
        Some(Turn::Agent(_)) => "Agent",
        _ => "User",
    };
    let mut p = format!(
        "Task: Check if there is unsafe content in '{role}' messages in conversations according to our safety policy with the below categories.\n\n{CATEGORIES_OPEN}\n"
    );
    for (i, c) in CATEGORIES.iter().enumerate() {
        p.push_str(&format!("S{}: {c}.\n", i + 1));
    }
    p.push_str("<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n");
    for t in turns {
        let (who, text) = match t {
            Turn::User(t) => ("User", t),
            Turn::Agent(t) => ("Agent", t),
        };
        p.push_str(&format!("{who}: {}\n\n", text.trim()));
    }
    p.push_str(&format!(
        "<END CONVERSATION>\n\nProvide your safety assessment for ONLY THE LAST {role} message in the above conversation:\n - First line must read 'safe' or 'unsafe'.\n - If unsafe, a second line must include a comma-separated list of violated categories."
    ));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_turn_decides_whose_message_is_assessed() {
        let p = task_prompt(&[Turn::User("hi".into()), Turn::Agent("hello".into())]);
        assert!(p.contains("in 'Agent' messages"));
        assert!(p.contains("ONLY THE LAST Agent message"));
        assert!(p.contains("User: hi\n\nAgent: hello\n\n<END CONVERSATION>"));
    }

    #[test]
    fn all_fourteen_categories_are_listed_in_order() {
        let p = task_prompt(&[Turn::User("x".into())]);
        let listed: Vec<&str> = p.lines().filter(|l| l.starts_with('S')).collect();
        assert_eq!(listed.len(), 14);
        assert_eq!(listed[0], "S1: Violent Crimes.");
        assert_eq!(listed[13], "S14: Code Interpreter Abuse.");
    }

    #[test]
    fn a_template_with_the_categories_builds_the_prompt_itself() {
        assert!(template_builds_prompt(
            "...<BEGIN UNSAFE CONTENT CATEGORIES>..."
        ));
        assert!(!template_builds_prompt("<|im_start|>"));
    }
}
