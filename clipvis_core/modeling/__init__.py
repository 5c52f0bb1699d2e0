"""Network modules (plain ``nn.Module``s with explicit constructor arguments)."""
