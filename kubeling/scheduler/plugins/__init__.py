"""The scheduler's in-tree plugins, one module per upstream plugin, and their registry
(`kubeling.scheduler.plugins.registry`). `helper` holds the matching rules (taints, tolerations,
node selectors) that controllers share with the scheduler."""
