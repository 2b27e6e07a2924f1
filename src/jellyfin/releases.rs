//! Which Jellyfin release first shipped each database migration: the table that turns the
//! migrations a data dir has applied into a range of server versions.
//!
//! Where the facts come from: Jellyfin's release tags v10.7.0 to v10.11.11 and v12.0-rc1
//! to v12.0-rc5 (every 12.0 release candidate reports itself as 12.0.0; they are told
//! apart here as `12.0.0-rcN`). In each tag, the EF Core migrations are the `[Migration]`
//! ids in `Jellyfin.Server.Implementations/Migrations` (10.7-10.10) and
//! `src/Jellyfin.Database/Jellyfin.Database.Providers.Sqlite/Migrations` (10.11 on); the
//! code migrations of 10.11 on are the `[JellyfinMigration(order, name)]` routines in
//! `Jellyfin.Server/Migrations`, whose history id is the order as `yyyyMMddHHmmss`, `_`
//! and the name. Both kinds land in `__EFMigrationsHistory` (code migrations with the
//! 4-part server version as `ProductVersion`). Up to 10.10, code migrations were recorded
//! by id (a GUID) in `config/migrations.xml`, which 10.11 converts into history rows and
//! renames to `migrations.xml.backup`.
//!
//! A migration marked to run on a fresh setup (`RunMigrationOnSetup`) is not seeded into
//! the history of a new install, so its absence does not bound the version from above
//! (the third field of [`MIGRATIONS`] is false for those). Two migrations were dropped in
//! 12.0 (`20250420220000_MigrateRatingLevels`, replaced; and
//! `20250420190000_RemoveDuplicatePlaylistChildren` from rc4): a row for them only shows
//! an older server once ran.

/// The releases the table knows, oldest first; indexes into it are a release's rank.
pub const RELEASES: [&str; 59] = [
    "10.7.0",
    "10.7.1",
    "10.7.2",
    "10.7.3",
    "10.7.4",
    "10.7.5",
    "10.7.6",
    "10.7.7",
    "10.8.0",
    "10.8.1",
    "10.8.2",
    "10.8.3",
    "10.8.4",
    "10.8.5",
    "10.8.6",
    "10.8.7",
    "10.8.8",
    "10.8.9",
    "10.8.10",
    "10.8.11",
    "10.8.12",
    "10.8.13",
    "10.9.0",
    "10.9.1",
    "10.9.2",
    "10.9.3",
    "10.9.4",
    "10.9.5",
    "10.9.6",
    "10.9.7",
    "10.9.8",
    "10.9.9",
    "10.9.10",
    "10.9.11",
    "10.10.0",
    "10.10.1",
    "10.10.2",
    "10.10.3",
    "10.10.4",
    "10.10.5",
    "10.10.6",
    "10.10.7",
    "10.11.0",
    "10.11.1",
    "10.11.2",
    "10.11.3",
    "10.11.4",
    "10.11.5",
    "10.11.6",
    "10.11.7",
    "10.11.8",
    "10.11.9",
    "10.11.10",
    "10.11.11",
    "12.0.0-rc1",
    "12.0.0-rc2",
    "12.0.0-rc3",
    "12.0.0-rc4",
    "12.0.0-rc5",
];

/// `__EFMigrationsHistory` ids: (migration id, rank of the first release that has it,
/// whether every install of that release has the row).
pub const MIGRATIONS: [(&str, u8, bool); 98] = [
    ("20200514181226_AddActivityLog", 0, true),
    ("20200613202153_AddUsers", 0, true),
    ("20200728005145_AddDisplayPreferences", 0, true),
    ("20200905220533_FixDisplayPreferencesIndex", 0, true),
    ("20201004171403_AddMaxActiveSessions", 0, true),
    ("20201204223655_AddCustomDisplayPreferences", 0, true),
    ("20210320181425_AddIndexesAndCollations", 8, true),
    ("20210407110544_NullableCustomPrefValue", 2, true),
    ("20210814002109_AddDevices", 8, true),
    ("20221022080052_AddIndexActivityLogsDateCreated", 14, true),
    ("20230526173516_RemoveEasyPassword", 22, true),
    ("20230626233818_AddTrickplayInfos", 22, true),
    ("20230923170422_UserCastReceiver", 22, true),
    ("20240729140605_AddMediaSegments", 34, true),
    ("20240928082930_MarkSegmentProviderIdNonNullable", 34, true),
    ("20241020103111_LibraryDbMigration", 42, true),
    ("20241111131257_AddedCustomDataKey", 42, true),
    ("20241111135439_AddedCustomDataKeyKey", 42, true),
    ("20241112152323_FixAncestorIdConfig", 42, true),
    ("20241112232041_FixMediaStreams", 42, true),
    ("20241112234144_FixMediaStreams2", 42, true),
    ("20241113133548_EnforceUniqueItemValue", 42, true),
    ("20250202021306_FixedCollation", 42, true),
    ("20250204092455_MakeStartEndDateNullable", 42, true),
    ("20250214031148_ChannelIdGuid", 42, true),
    (
        "20250326065026_AddInheritedParentalRatingSubValue",
        42,
        true,
    ),
    ("20250327101120_AddKeyframeData", 42, true),
    ("20250327171413_AddHdr10PlusFlag", 42, true),
    ("20250331182844_FixAttachmentMigration", 42, true),
    ("20250401142247_FixAncestors", 42, true),
    ("20250405075612_FixItemValuesIndices", 42, true),
    ("20250420000000_CreateNetworkConfiguration", 42, true),
    ("20250420010000_MigrateNetworkConfiguration", 42, true),
    ("20250420020000_MigrateMusicBrainzTimeout", 42, true),
    ("20250420030000_MigrateEncodingOptions", 42, true),
    (
        "20250420040000_RenameEnableGroupingIntoCollections",
        42,
        true,
    ),
    ("20250420050000_DisableTranscodingThrottling", 42, true),
    ("20250420060000_CreateUserLoggingConfigFile", 42, true),
    ("20250420070000_MigrateActivityLogDb", 42, true),
    ("20250420080000_RemoveDuplicateExtras", 42, true),
    ("20250420090000_AddDefaultPluginRepository", 42, false),
    ("20250420100000_MigrateUserDb", 42, true),
    ("20250420110000_ReaddDefaultPluginRepository", 42, false),
    ("20250420120000_MigrateDisplayPreferencesDb", 42, true),
    ("20250420130000_RemoveDownloadImagesInAdvance", 42, true),
    ("20250420140000_MigrateAuthenticationDb", 42, true),
    ("20250420150000_FixPlaylistOwner", 42, true),
    ("20250420160000_AddDefaultCastReceivers", 42, false),
    ("20250420170000_UpdateDefaultPluginRepository", 42, false),
    ("20250420180000_FixAudioData", 42, true),
    ("20250420190000_RemoveDuplicatePlaylistChildren", 42, true),
    (
        "20250420193000_MigrateLibraryDbCompatibilityCheck",
        42,
        true,
    ),
    ("20250420200000_MigrateLibraryDb", 42, true),
    ("20250420210000_MoveExtractedFiles", 42, true),
    ("20250420220000_MigrateRatingLevels", 42, true),
    ("20250420230000_MoveTrickplayFiles", 42, false),
    ("20250420230000_RefreshInternalDateModified", 42, true),
    ("20250421000000_MigrateKeyframeData", 42, true),
    ("20250609115616_DetachUserDataInsteadOfDelete", 42, true),
    ("20250618010000_MigrateLibraryUserData", 42, true),
    ("20250620180000_FixDates", 42, true),
    (
        "20250622170802_BaseItemImageInfoDateModifiedNullable",
        42,
        true,
    ),
    ("20250714044826_ResetJournalMode", 42, true),
    ("20250730215000_ReseedFolderFlag", 42, true),
    (
        "20250913211637_AddProperParentChildRelationBaseItemWithCascade",
        42,
        true,
    ),
    ("20250925203415_ExtendPeopleMapKey", 42, true),
    ("20251009200000_CleanMusicArtist", 42, true),
    ("20260113102337_AddLinkedChildrenTable", 54, true),
    ("20260113120000_MigrateLinkedChildren", 54, true),
    ("20260113203012_ChangeOwnerIdToGuid", 54, true),
    ("20260113230000_CleanupOrphanedExtras", 54, true),
    ("20260113233000_AddForeignKeyToOwnerId", 54, true),
    ("20260113233500_DropExtraIdsColumn", 54, true),
    ("20260115120000_FixIncorrectOwnerIdRelationships", 54, true),
    ("20260116114245_AddLatestItemsDateCreatedIndexes", 54, true),
    ("20260118182305_AddIndicesToImageInfo", 54, true),
    ("20260130232147_AddBaseItemNameIndex", 54, true),
    (
        "20260206200000_FixLibrarySubtitleDownloadLanguages",
        49,
        true,
    ),
    ("20260206224832_IndexOptimizations", 54, true),
    ("20260215201634_ChangePrimaryVersionIdToGuid", 54, true),
    ("20260302090000_MigrateRatingLevels", 54, true),
    ("20260308123920_AddTypeCleanNameIndex", 54, true),
    ("20260504075755_AddPartialIndexForItemCounts", 54, true),
    ("20260508120000_MergeDuplicateMusicArtists", 54, true),
    ("20260508130000_MergeDuplicatePeople", 54, true),
    ("20260522092303_AddNormalizedUsername", 52, true),
    ("20260522092304_UpdateNormalizedUsername", 52, true),
    ("20260524120336_AddUniqueNormalizedUsernameIndex", 52, true),
    ("20260525010000_CleanupOrphanedExternalData", 54, true),
    ("20260531160000_DisableLegacyAuthorization", 54, true),
    ("20260610120000_RefreshCleanNamesAndValues", 54, true),
    ("20260722120000_RefreshForcedSortNames", 57, true),
    ("20260723111547_AllowDuplicatePlaylistChildren", 57, true),
    ("20260723120000_RecomputeSeriesPresentationKey", 57, true),
    ("20260724185102_AddPrimaryVersionIdIndex", 57, true),
    ("20260728170000_AddPeopleNameLowerIndex", 58, true),
    ("20260728182152_AddPeopleItemMapCoveringIndex", 58, true),
    (
        "20260729120000_RestorePlaylistChildrenFromMetadata",
        57,
        true,
    ),
];

/// `migrations.xml` routine ids (lowercase GUIDs) of 10.7-10.10: (id, rank of the first
/// release that has it). Every one is recorded on every install (applied, or marked
/// applied on a fresh one).
pub const LEGACY_ROUTINES: [(&str, u8); 22] = [
    ("eb58ebee-9514-4b9b-8225-12e1a40020df", 0), // AddDefaultPluginRepository
    ("ef103419-8451-40d8-9f34-d1a8e93a1679", 0), // CreateLoggingConfigHeirarchy
    ("4124c2cd-e939-4ffb-9be9-9b311c413638", 0), // DisableTranscodingThrottling
    ("3793eb59-bc8c-456c-8b9f-bd5a62a42978", 0), // MigrateActivityLogDatabase
    ("06387815-c3cc-421f-a888-fb5f9992bea8", 0), // MigrateDisplayPreferencesDatabase
    ("5c4b82a2-f053-4009-bd05-b6fcad82f14c", 0), // MigrateUserDatabase
    ("5f86e7f6-d966-4c77-849d-7a7b40b68c4e", 0), // ReaddDefaultPluginRepository
    ("a81f75e0-8f43-416f-a5e8-516ccab4d8cc", 0), // RemoveDownloadImagesInAdvance
    ("acbe17b7-8435-4a83-8b64-6fcf162cb9bd", 0), // RemoveDuplicateExtras
    ("9b354818-94d5-4b68-ac49-e35cb85f9d84", 8), // CreateNetworkConfiguration
    ("5bd72f41-e6f3-4f60-90aa-09869abe0e22", 8), // MigrateAuthenticationDatabase
    ("34a1a1c4-5572-418e-a2f8-32cdfe2668e8", 22), // AddDefaultCastReceivers
    ("615dfa9e-2497-4dbb-a472-61938b752c5b", 22), // FixPlaylistOwner
    ("a6dcacf4-c057-4ef9-80d3-61cef9ddb4f0", 22), // MigrateMusicBrainzTimeout
    ("4fb5c950-1991-11ee-9b4b-0800200c9a66", 22), // MigrateNetworkConfiguration
    ("67445d54-b895-4b24-9f4c-35ce0690ea07", 22), // MigrateRatingLevels
    ("852816e0-2712-49a9-9240-c6fc5fcad1a8", 22), // UpdateDefaultPluginRepository10.9
    ("cf6fabc2-9fbe-4933-84a5-ffe52ef22a58", 26), // FixAudioData
    ("a8e61960-7726-4450-8f3d-82c12daabbcb", 34), // MigrateEncodingOptions
    ("4ef123d5-8eff-4b0b-869d-3aed07a60e1b", 34), // MoveTrickplayFiles
    ("96c156a2-7a13-4b3b-a8b8-fb80c94d20c0", 36), // RemoveDuplicatePlaylistChildren
    ("d34bfc33-5d2e-4790-8085-069ef6eecb4e", 39), // MigrateRatingLevels
];
