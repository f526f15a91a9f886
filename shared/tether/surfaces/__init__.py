"""One module per published API surface: routes, request/response models, error rendering."""
