# Ordinary pillar SLS go here. The inventory (inventory.yaml) is read by the rolestack ext_pillar,
# not through this top file.
base: {}
