"""Views of what single units compute: filters, activation maps, receptive fields, top-activating patches, synthesized
images, the model summary and the layer catalog. Beside attribution: neither imports the other.
"""
