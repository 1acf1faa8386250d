"""`randsae baseline`, the study: its settings and stage records and the runner (`runner`), the verdict
(`verdict`) and the report (`report`)."""
