//! One line for an error and its causes, each cause said once.
//!
//! Error types from other crates often repeat their source's text in their own message (kube's
//! `failed to read kubeconfig from '…': No such file or directory (os error 2)` also returns that
//! I/O error as its source), so printing the plain source chain (`{:#}` of an `anyhow::Error`)
//! would say the cause twice. Every binary prints its fatal error through [`chain`].

use std::error::Error;

/// `err`'s message followed by the message of each cause whose text is not already in the line.
pub fn chain(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::chain;
    use std::fmt;

    /// An error that repeats its source's text, as kube's and many others do.
    #[derive(Debug)]
    struct Repeats(std::io::Error);

    impl fmt::Display for Repeats {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "cannot read x: {}", self.0)
        }
    }

    impl std::error::Error for Repeats {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// An error that leaves its source's text to the printer.
    #[derive(Debug)]
    struct Hides(std::io::Error);

    impl fmt::Display for Hides {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("cannot read y")
        }
    }

    impl std::error::Error for Hides {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::other("disk on fire");
        assert_eq!(chain(&Repeats(io)), "cannot read x: disk on fire");
    }

    #[test]
    fn a_cause_missing_from_the_message_is_appended() {
        let io = std::io::Error::other("disk on fire");
        assert_eq!(chain(&Hides(io)), "cannot read y: disk on fire");
    }
}
