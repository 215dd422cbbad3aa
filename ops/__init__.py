"""Operations: the schema doctor, the usage importer's command, logs, health."""
