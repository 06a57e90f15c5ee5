"""AI model registry: providers, versioned prompts, fallbacks, budgets, measured calls."""
