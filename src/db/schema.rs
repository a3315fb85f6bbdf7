// Diesel table definitions for migrations/sqlite. Keep in step with the
// migrations: `db::tests::schema_matches_migrations` checks every column.

diesel::table! {
    srp_connections (id) {
        id -> BigInt,
        srp_id -> Text,
        srp_key_sealed -> Binary,
        relay_host -> Text,
        relay_port -> Integer,
        cal_licences -> Integer,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    servers (id) {
        id -> BigInt,
        name -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    messaging_agents (id) {
        id -> BigInt,
        server_id -> BigInt,
        name -> Text,
        max_users -> Integer,
    }
}

diesel::table! {
    users (id) {
        id -> BigInt,
        display_name -> Text,
        email -> Text,
        mailbox_login -> Text,
        account_status -> Text,
        activation_status -> Text,
        messaging_agent_id -> Nullable<BigInt>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        directory_id -> Nullable<BigInt>,
        directory_guid -> Nullable<Text>,
        directory_dn -> Nullable<Text>,
        directory_dn_key -> Nullable<Text>,
    }
}

diesel::table! {
    groups (id) {
        id -> BigInt,
        name -> Text,
        description -> Text,
        created_at -> Timestamp,
        directory_id -> Nullable<BigInt>,
        directory_guid -> Nullable<Text>,
        directory_dn -> Nullable<Text>,
    }
}

diesel::table! {
    group_members (group_id, user_id) {
        group_id -> BigInt,
        user_id -> BigInt,
    }
}

diesel::table! {
    administrators (id) {
        id -> BigInt,
        login -> Text,
        display_name -> Text,
        password_hash -> Text,
        disabled -> Bool,
        created_at -> Timestamp,
    }
}

diesel::table! {
    roles (id) {
        id -> BigInt,
        name -> Text,
        builtin -> Bool,
        permissions -> Text,
    }
}

diesel::table! {
    administrator_roles (administrator_id, role_id) {
        administrator_id -> BigInt,
        role_id -> BigInt,
    }
}

diesel::table! {
    it_policies (id) {
        id -> BigInt,
        name -> Text,
        description -> Text,
        is_default -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    it_policy_rules (policy_id, rule) {
        policy_id -> BigInt,
        rule -> Text,
        value -> Text,
    }
}

diesel::table! {
    it_policy_assignments (id) {
        id -> BigInt,
        policy_id -> BigInt,
        user_id -> Nullable<BigInt>,
        group_id -> Nullable<BigInt>,
        rank -> Integer,
    }
}

diesel::table! {
    software_configurations (id) {
        id -> BigInt,
        name -> Text,
        description -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    software_applications (id) {
        id -> BigInt,
        configuration_id -> BigInt,
        name -> Text,
        version -> Text,
        disposition -> Text,
    }
}

diesel::table! {
    software_assignments (id) {
        id -> BigInt,
        configuration_id -> BigInt,
        user_id -> Nullable<BigInt>,
        group_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    devices (id) {
        id -> BigInt,
        pin -> Text,
        user_id -> Nullable<BigInt>,
        model -> Text,
        os_version -> Text,
        carrier -> Text,
        applied_policy_id -> Nullable<BigInt>,
        policy_applied_at -> Nullable<Timestamp>,
        last_contact_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    device_diagnostics (id) {
        id -> BigInt,
        device_id -> BigInt,
        reported_at -> Timestamp,
        report -> Text,
    }
}

diesel::table! {
    device_keys (device_id, slot) {
        device_id -> BigInt,
        slot -> Text,
        key_id -> BigInt,
        sealed_key -> Binary,
        created_at -> Timestamp,
    }
}

diesel::table! {
    service_books (id) {
        id -> BigInt,
        device_id -> BigInt,
        kind -> Text,
        uid -> Text,
        content -> Text,
        sent_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    message_filters (id) {
        id -> BigInt,
        user_id -> Nullable<BigInt>,
        name -> Text,
        position -> Integer,
        enabled -> Bool,
        conditions -> Text,
        action -> Text,
    }
}

diesel::table! {
    messages (id) {
        id -> BigInt,
        ref_id -> Text,
        user_id -> Nullable<BigInt>,
        device_id -> Nullable<BigInt>,
        direction -> Text,
        status -> Text,
        subject -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    message_hops (id) {
        id -> BigInt,
        message_id -> BigInt,
        hop -> Text,
        at -> Timestamp,
        detail -> Text,
    }
}

diesel::table! {
    statistics (id) {
        id -> BigInt,
        user_id -> Nullable<BigInt>,
        forwarded -> BigInt,
        filtered -> BigInt,
        pending -> BigInt,
        delivered -> BigInt,
        expired -> BigInt,
        failed -> BigInt,
        sent -> BigInt,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    audit_log (id) {
        id -> BigInt,
        at -> Timestamp,
        actor -> Text,
        action -> Text,
        target -> Text,
        before_state -> Nullable<Text>,
        after_state -> Nullable<Text>,
        prev_hash -> Text,
        hash -> Text,
    }
}

diesel::table! {
    outbound_queue (id) {
        id -> BigInt,
        ref_id -> Text,
        pin -> Text,
        content_type -> Integer,
        priority -> Bool,
        envelope -> Binary,
        state -> Text,
        attempts -> Integer,
        created_at -> Timestamp,
        last_sent_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    directories (id) {
        id -> BigInt,
        name -> Text,
        high_water_mark -> Nullable<Text>,
        last_full_sync_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    directory_sync_runs (id) {
        id -> BigInt,
        directory_id -> BigInt,
        kind -> Text,
        started_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
        entries_read -> BigInt,
        created -> BigInt,
        updated -> BigInt,
        removed -> BigInt,
        errors -> BigInt,
        outcome -> Text,
        message -> Text,
    }
}

diesel::table! {
    mailbox_states (user_id) {
        user_id -> BigInt,
        uid_validity -> Nullable<BigInt>,
        last_uid -> BigInt,
        state -> Text,
        error -> Nullable<Text>,
        error_at -> Nullable<Timestamp>,
        save_sent -> Bool,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    mail_items (message_id) {
        message_id -> BigInt,
        user_id -> BigInt,
        uid_validity -> BigInt,
        uid -> BigInt,
        message_id_header -> Text,
        seen -> Bool,
        deleted -> Bool,
    }
}

diesel::table! {
    device_replay_window (pin, key_id, content_type, ref_id) {
        pin -> Text,
        key_id -> BigInt,
        content_type -> Integer,
        ref_id -> Text,
        received_at -> Timestamp,
    }
}

diesel::table! {
    mail_outbox (id) {
        id -> BigInt,
        ref_id -> Text,
        user_id -> BigInt,
        pin -> Text,
        compose -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    admin_sessions (id) {
        id -> BigInt,
        administrator_id -> BigInt,
        token_hash -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        last_seen_at -> Timestamp,
    }
}

diesel::table! {
    administrator_groups (id) {
        id -> BigInt,
        name -> Text,
        description -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    administrator_group_members (group_id, administrator_id) {
        group_id -> BigInt,
        administrator_id -> BigInt,
    }
}

diesel::table! {
    administrator_group_roles (group_id, role_id) {
        group_id -> BigInt,
        role_id -> BigInt,
    }
}

diesel::table! {
    user_services (user_id, service) {
        user_id -> BigInt,
        service -> Text,
        enabled -> Bool,
    }
}

diesel::table! {
    admin_commands (id) {
        id -> BigInt,
        kind -> Text,
        parameters -> Text,
        requested_by -> Text,
        created_at -> Timestamp,
        sealed_password -> Nullable<Binary>,
    }
}

diesel::table! {
    admin_command_targets (command_id, device_id) {
        command_id -> BigInt,
        device_id -> BigInt,
        state -> Text,
        ref_id -> Nullable<Text>,
        detail -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    activation_passwords (user_id) {
        user_id -> BigInt,
        password_hash -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        failed_attempts -> Integer,
        sealed_secret -> Nullable<Binary>,
    }
}

diesel::table! {
    activation_events (id) {
        id -> BigInt,
        user_id -> BigInt,
        status -> Text,
        at -> Timestamp,
    }
}

diesel::table! {
    activation_exchanges (id) {
        id -> BigInt,
        user_id -> BigInt,
        pin -> Text,
        ref_id -> Text,
        key_id -> BigInt,
        sealed_keys -> Binary,
        model -> Text,
        os_version -> Text,
        started_at -> Timestamp,
        attempt_counted -> Bool,
    }
}

diesel::table! {
    answered_activation_requests (digest) {
        digest -> Text,
        answered_at -> Timestamp,
    }
}

diesel::table! {
    domain_keys (id) {
        id -> BigInt,
        public_key -> Binary,
        sealed_private_key -> Binary,
        created_at -> Timestamp,
    }
}

diesel::table! {
    service_secrets (name) {
        name -> Text,
        sealed_value -> Binary,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    audit_keying (id) {
        id -> Integer,
        keyed_from -> BigInt,
    }
}

diesel::joinable!(messaging_agents -> servers (server_id));
diesel::joinable!(users -> messaging_agents (messaging_agent_id));
diesel::joinable!(group_members -> groups (group_id));
diesel::joinable!(group_members -> users (user_id));
diesel::joinable!(administrator_roles -> administrators (administrator_id));
diesel::joinable!(administrator_roles -> roles (role_id));
diesel::joinable!(it_policy_rules -> it_policies (policy_id));
diesel::joinable!(it_policy_assignments -> it_policies (policy_id));
diesel::joinable!(software_applications -> software_configurations (configuration_id));
diesel::joinable!(devices -> users (user_id));
diesel::joinable!(device_diagnostics -> devices (device_id));
diesel::joinable!(device_keys -> devices (device_id));
diesel::joinable!(service_books -> devices (device_id));
diesel::joinable!(message_hops -> messages (message_id));
diesel::joinable!(directory_sync_runs -> directories (directory_id));
diesel::joinable!(mailbox_states -> users (user_id));
diesel::joinable!(mail_items -> messages (message_id));
diesel::joinable!(mail_outbox -> users (user_id));
diesel::joinable!(admin_sessions -> administrators (administrator_id));
diesel::joinable!(activation_passwords -> users (user_id));
diesel::joinable!(admin_command_targets -> admin_commands (command_id));
diesel::joinable!(admin_command_targets -> devices (device_id));
diesel::joinable!(user_services -> users (user_id));
diesel::joinable!(activation_events -> users (user_id));
diesel::joinable!(activation_exchanges -> users (user_id));
diesel::joinable!(administrator_group_members -> administrator_groups (group_id));
diesel::joinable!(administrator_group_members -> administrators (administrator_id));
diesel::joinable!(administrator_group_roles -> administrator_groups (group_id));
diesel::joinable!(administrator_group_roles -> roles (role_id));

diesel::allow_tables_to_appear_in_same_query!(
    user_services,
    admin_commands,
    admin_command_targets,
    srp_connections,
    servers,
    messaging_agents,
    users,
    groups,
    group_members,
    administrators,
    roles,
    administrator_roles,
    it_policies,
    it_policy_rules,
    it_policy_assignments,
    software_configurations,
    software_applications,
    software_assignments,
    devices,
    device_diagnostics,
    device_keys,
    service_books,
    message_filters,
    messages,
    message_hops,
    statistics,
    audit_log,
    outbound_queue,
    directories,
    directory_sync_runs,
    mailbox_states,
    mail_items,
    mail_outbox,
    admin_sessions,
    administrator_groups,
    administrator_group_members,
    administrator_group_roles,
    activation_passwords,
    activation_events,
    activation_exchanges,
    answered_activation_requests,
    domain_keys,
    service_secrets,
);

// The Synchronization Service (migration 000060_synchronization).

diesel::table! {
    sync_settings (database) {
        database -> Text,
        enabled -> Bool,
        direction -> Text,
        conflict -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    sync_states (user_id, database) {
        user_id -> BigInt,
        database -> Text,
        state -> Text,
        sync_token -> Nullable<Text>,
        ctag -> Nullable<Text>,
        error -> Nullable<Text>,
        error_at -> Nullable<Timestamp>,
        last_sync_at -> Nullable<Timestamp>,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    sync_items (user_id, database, uid) {
        user_id -> BigInt,
        database -> Text,
        uid -> Text,
        href -> Text,
        etag -> Text,
        digest -> Text,
    }
}

diesel::table! {
    sync_item_errors (id) {
        id -> BigInt,
        user_id -> BigInt,
        database -> Text,
        item -> Text,
        side -> Text,
        message -> Text,
        at -> Timestamp,
    }
}

diesel::table! {
    device_backups (id) {
        id -> BigInt,
        user_id -> BigInt,
        pin -> Text,
        taken_at -> Timestamp,
        settings -> Text,
        items -> Text,
        item_count -> Integer,
    }
}

diesel::joinable!(sync_states -> users (user_id));
diesel::joinable!(sync_items -> users (user_id));
diesel::joinable!(sync_item_errors -> users (user_id));
diesel::joinable!(device_backups -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(users, sync_states);
diesel::allow_tables_to_appear_in_same_query!(devices, sync_states);
diesel::allow_tables_to_appear_in_same_query!(
    sync_settings,
    sync_states,
    sync_items,
    sync_item_errors,
    device_backups,
);
