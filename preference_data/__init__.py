"""Everything about data: records, readers, validation with quarantine, transforms, collation."""
