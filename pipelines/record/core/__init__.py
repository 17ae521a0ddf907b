"""The pure core of the record: access and read rules, the audit chain, the lifecycle, habilitations."""
