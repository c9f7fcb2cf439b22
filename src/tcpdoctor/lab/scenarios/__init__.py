"""One module per lab scenario; each defines SCENARIO (a lab.model.ScenarioSpec)."""
