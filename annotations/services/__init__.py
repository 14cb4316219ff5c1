"""Business rules: every state change of the product happens in one named function here."""
