"""Built-in label declarations (JSON package data; see ``brainparc.train.labelsets``)."""
